"""The batch consumer's at-least-once rule without a broker: an offset is committed only after Redis applied it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition

from reelstream.settings import Settings
from streams.consumer import BatchConsumer
from streams.processor import Message

RATINGS, MOVIES = TopicPartition("ratings", 0), TopicPartition("movies", 0)


class _FakeKafka:
    """getmany() hands out the given batches, then stops the service; commit() records its offsets."""

    def __init__(self, service: BatchConsumer, batches: list[dict]) -> None:
        self.service, self.batches, self.commits = service, batches, []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if not self.batches:
            self.service._stopped.set()
            return {}
        return self.batches.pop(0)

    def assignment(self) -> set[TopicPartition]:
        return {RATINGS, MOVIES}

    async def commit(self, offsets: dict) -> None:
        self.commits.append(dict(offsets))


def _records(tp: TopicPartition, offsets: range) -> list[SimpleNamespace]:
    return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o, value=b"x", timestamp=0) for o in offsets]


def test_offsets_are_committed_only_after_the_batch_is_applied_and_movies_go_first() -> None:
    settings = Settings(topic_ratings="ratings", topic_movies="movies", stream_commit_interval_s=1000)
    calls: list[tuple[str, list[int]]] = []
    failures = ["redis down"]

    async def main() -> _FakeKafka:
        async def apply(topic: str, msgs: list[Message]) -> None:
            calls.append((topic, [m.offset for m in msgs]))
            if failures and topic == "ratings":
                assert not service.pending, "nothing may be pending while the batch is not applied"
                raise ConnectionError(failures.pop())

        service = BatchConsumer(settings, apply)
        kafka = _FakeKafka(service, [{RATINGS: _records(RATINGS, range(5, 8)), MOVIES: _records(MOVIES, range(2))}])
        service.consumer = kafka  # type: ignore[assignment]
        service.sleep = lambda seconds: asyncio.sleep(0)  # type: ignore[method-assign]
        await service.consume_loop()
        assert kafka.commits == [], "the commit interval has not passed: nothing committed yet"
        await service.commit_offsets()  # what a revocation or the stop does
        return kafka

    kafka = asyncio.run(main())
    # movies before ratings; the failed batch is retried as is (its applied movies part is then skipped by the fence)
    assert calls == [("movies", [0, 1]), ("ratings", [5, 6, 7]), ("movies", [0, 1]), ("ratings", [5, 6, 7])]
    assert kafka.commits == [{RATINGS: 8, MOVIES: 2}]
