"""The batch consumer without a broker: at-least-once commits, outages, and positions that follow the fence.

A fake consumer serves in-memory partition logs (positions, pause, seek, high watermarks, an out-of-range
position reset to the beginning like ``auto_offset_reset="earliest"``); the apply step is the processor's
own fence (:func:`streams.processor.fence_batch`) over a :class:`~streams.store.MemoryFeatureTables`, where
each applied record increments its own counter. The oracle: every record of every log counted exactly once.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.conn import CloseReason

from reelstream.settings import Settings
from streams.consumer import BatchConsumer, Outages, _Rebalance
from streams.log_identity import Fence, LogView
from streams.metrics import WorkerMetrics
from streams.processor import BatchPlan, Message, commit_plan, fence_batch
from streams.store import MemoryFeatureTables

RATINGS, MOVIES = TopicPartition("ratings", 0), TopicPartition("movies", 0)
DEADLINE_S = 10.0


class FakeKafka:
    """Partition logs with positions; ``getmany`` returns what follows each unpaused position."""

    def __init__(self, logs: dict[TopicPartition, list[SimpleNamespace]]) -> None:
        self.logs = logs
        self.position = {tp: 0 for tp in logs}
        self.hw: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.polls = 0
        self.reset_out_of_range = True  #: False: a fetch beyond the end just returns nothing (Tansu)
        self.hw_lag = 0  #: how far the reported high watermark lags the log (Tansu after a restart)
        self.polled_ms: dict[TopicPartition, float] = {}
        #: aiokafka's client as far as the consumer looks at it: its connections and their close callback
        self._client = SimpleNamespace(_conns={"node": object()}, _on_connection_closed=lambda conn, why: None)

    def restart_broker(self, logs: dict[TopicPartition, list[SimpleNamespace]]) -> None:
        """The broker dies (its connection breaks) and comes back with ``logs`` over a new connection."""
        old = self._client._conns.pop("node")
        self._client._on_connection_closed(old, CloseReason.CONNECTION_BROKEN)
        self.logs.update(logs)
        self._client._conns["node"] = object()

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        self.polls += 1
        out = {}
        for tp, log in self.logs.items():
            if tp in self._paused:
                continue
            self.polled_ms[tp] = time.time() * 1000
            if self.position[tp] > len(log) and self.reset_out_of_range:
                self.position[tp] = 0  # out of range: auto_offset_reset="earliest"
            recs = [r for r in log if r.offset >= self.position[tp]][:max_records]
            self.hw[tp] = max(len(log) - self.hw_lag, 0)
            if recs:
                out[tp] = recs
                self.position[tp] = recs[-1].offset + 1
        if not out:
            await asyncio.sleep(0.001)  # the fake's poll wait (aiokafka waits up to timeout_ms)
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.logs)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position[tp] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.position[tp] = 0

    def last_poll_timestamp(self, tp: TopicPartition) -> float | None:
        return self.polled_ms.get(tp)

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.hw.get(tp)

    async def commit(self, offsets: dict) -> None:
        self.commits.append(dict(offsets))


def records(tp: TopicPartition, n: int, tag: str) -> list[SimpleNamespace]:
    """One incarnation of a partition's log; ``tag`` makes its records differ from another incarnation's."""
    return [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o, value=f"{tag}{o}".encode(),
                            timestamp=o, key=b"k") for o in range(n)]  # fmt: skip


class Harness:
    """A BatchConsumer over FakeKafka whose apply is the processor's fence over an in-memory store."""

    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self.store = MemoryFeatureTables()
        self.fail_next: list[BaseException] = []  # errors the next applies raise (a Redis outage)
        self.redis_up = True
        self.calls: list[tuple[str, list[int]]] = []
        settings = Settings(topic_ratings="ratings", topic_movies="movies", stream_commit_interval_s=1000,
                            worker_retry_initial_s=0.001, worker_retry_max_s=0.002)  # fmt: skip
        self.outages = Outages(WorkerMetrics())
        self.service = BatchConsumer(settings, self.apply, fences=self.fences, ping_redis=self.ping,
                                     outages=self.outages)  # fmt: skip
        self.service.consumer = kafka  # type: ignore[assignment]
        self.service._watch_connections(kafka)  # type: ignore[arg-type]

    async def apply(self, topic: str, msgs: list[Message], logs: dict[int, LogView]) -> BatchPlan:
        self.calls.append((topic, [m.offset for m in msgs]))
        if self.fail_next:
            raise self.fail_next.pop(0)
        plan = BatchPlan(topic)
        after = fence_batch(plan, msgs, self.store.read_fences(topic), logs, int(time.time() * 1000))
        for m in msgs:
            if m.offset > after.get(m.partition, -1):
                plan.ops.append(("C", f"applied:{topic}", m.value.decode(), 1))
                plan.applied += 1
        assert commit_plan(self.store, plan)
        return plan

    async def fences(self, topic: str) -> dict[int, Fence]:
        if not self.redis_up:
            raise ConnectionError("redis down")
        return self.store.read_fences(topic)

    async def ping(self) -> None:
        if not self.redis_up:
            raise ConnectionError("redis down")

    def counts(self, topic: str) -> dict[str, int]:
        return self.store.hashes.get(f"applied:{topic}", {})

    async def run_until(self, done: Callable[[], bool], what: str) -> None:
        """Run the consume loop until ``done()`` holds (a deadline, never a fixed sleep), then stop it."""
        task = asyncio.ensure_future(self.service.consume_loop())
        deadline = time.monotonic() + DEADLINE_S
        try:
            while not done():
                assert not task.done(), f"the loop ended: {task.exception() if task.done() else ''}"
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.001)
        finally:
            self.service._stopped.set()
            await task
            self.service._stopped.clear()


def once_each(h: Harness, topic: str, values: list[str]) -> bool:
    c = h.counts(topic)
    return set(c) == set(values) and all(v == 1 for v in c.values())


def test_offsets_are_committed_only_after_the_batch_is_applied_and_movies_go_first() -> None:
    async def main() -> Harness:
        kafka = FakeKafka({RATINGS: records(RATINGS, 8, "r"), MOVIES: records(MOVIES, 2, "m")})
        h = Harness(kafka)
        await h.run_until(lambda: kafka.position[RATINGS] == 8 and bool(h.service.pending), "the batch")
        assert kafka.commits == [], "the commit interval has not passed: nothing committed yet"
        await h.service.commit_offsets()  # what a revocation or the stop does
        return h

    h = asyncio.run(main())
    assert h.calls[0] == ("movies", [0, 1]) and h.calls[1] == ("ratings", list(range(8)))
    assert h.kafka.commits == [{RATINGS: 8, MOVIES: 2}]


def test_a_redis_outage_pauses_recovers_and_applies_everything_exactly_once() -> None:
    async def main() -> Harness:
        kafka = FakeKafka({RATINGS: records(RATINGS, 6, "r"), MOVIES: records(MOVIES, 2, "m")})
        h = Harness(kafka)
        await h.run_until(lambda: once_each(h, "ratings", [f"r{i}" for i in range(6)]), "the first log")
        h.fail_next = [ConnectionError("redis down")]  # the next apply fails ...
        h.redis_up = False  # ... and Redis stays down a while
        kafka.logs[RATINGS] += records(RATINGS, 10, "r")[6:]
        await h.run_until(lambda: h.outages.degraded, "the outage")
        assert kafka.paused() == {RATINGS, MOVIES}, "consumption stops while Redis is down"
        assert h.service.pending[RATINGS] == 6, "the failed batch is not to commit"
        assert h.service._start_commit() is None, "and nothing is committed while Redis is down"
        h.redis_up = True
        await h.run_until(lambda: once_each(h, "ratings", [f"r{i}" for i in range(10)]), "the recovery")
        return h

    h = asyncio.run(main())
    assert not h.outages.degraded and h.kafka.paused() == set()
    assert once_each(h, "movies", ["m0", "m1"])


@pytest.mark.parametrize("resets_out_of_range", [True, False], ids=["out-of-range-reset", "empty-fetch"])
def test_a_broker_restarted_with_an_empty_log_is_a_reset_and_the_new_records_apply_once(
    resets_out_of_range: bool,
) -> None:
    """Kafka answers a fetch beyond the log end with OffsetOutOfRange (reset to the beginning); Tansu with
    nothing: then the fenced record not coming back from F is what proves the shorter log."""

    async def main() -> Harness:
        kafka = FakeKafka({RATINGS: records(RATINGS, 32, "old"), MOVIES: []})
        kafka.reset_out_of_range = resets_out_of_range
        h = Harness(kafka)
        await h.run_until(lambda: len(h.counts("ratings")) == 32, "the old log")
        kafka.logs[RATINGS] = records(RATINGS, 2, "new")  # Tansu restarted: offsets 0 and 1 again
        await h.run_until(lambda: len(h.counts("ratings")) == 34, "the new log")
        return h

    h = asyncio.run(main())
    assert once_each(h, "ratings", [f"old{i}" for i in range(32)] + ["new0", "new1"])
    stats = h.store.hashes["rs:stats"]
    assert stats["log_resets"] == 1 and "events_lost" not in stats  # everything of the old log was applied
    assert h.store.read_fences("ratings")[0].epoch == 1


def test_a_longer_replaced_log_is_caught_by_the_fenced_record_after_the_rebalance() -> None:
    async def main() -> Harness:
        kafka = FakeKafka({RATINGS: records(RATINGS, 5, "old"), MOVIES: []})
        h = Harness(kafka)
        await h.run_until(lambda: len(h.counts("ratings")) == 5, "the old log")
        kafka.logs[RATINGS] = records(RATINGS, 9, "new")  # replaced by a longer log: the position stays valid
        await _Rebalance(h.service).on_partitions_assigned({RATINGS})  # the group rejoins the new broker
        await h.run_until(lambda: len(h.counts("ratings")) == 14, "the new log")
        return h

    h = asyncio.run(main())
    assert once_each(h, "ratings", [f"old{i}" for i in range(5)] + [f"new{i}" for i in range(9)])
    assert h.store.hashes["rs:resets:ratings"]["0"].count("record_replaced") == 1


def test_a_new_log_that_passed_the_fence_before_any_fetch_is_caught_by_the_broken_connection() -> None:
    """Producers flush their backlog the moment a restarted broker is back: the new log passes a small fence
    before a fetch shows any fallen high watermark, and read on from F + 1 it would lose new0..new2."""

    async def main() -> Harness:
        kafka = FakeKafka({RATINGS: records(RATINGS, 3, "old"), MOVIES: []})
        h = Harness(kafka)
        await h.run_until(lambda: len(h.counts("ratings")) == 3, "the old log")
        kafka.restart_broker({RATINGS: records(RATINGS, 9, "new")})  # position 3 is valid in the new log
        await h.run_until(lambda: len(h.counts("ratings")) == 12, "the new log")
        return h

    h = asyncio.run(main())
    assert once_each(h, "ratings", [f"old{i}" for i in range(3)] + [f"new{i}" for i in range(9)])
    assert h.store.hashes["rs:resets:ratings"]["0"].count("record_replaced") == 1
    assert "events_lost" not in h.store.hashes["rs:stats"]  # the old log was applied to its end


def test_a_broken_connection_to_the_same_log_verifies_the_fence_and_resets_nothing() -> None:
    async def main() -> Harness:
        kafka = FakeKafka({RATINGS: records(RATINGS, 5, "r"), MOVIES: []})
        h = Harness(kafka)
        await h.run_until(lambda: len(h.counts("ratings")) == 5, "the log")
        kafka.restart_broker({RATINGS: records(RATINGS, 8, "r")})  # a broker that kept its log (Kafka)
        await h.run_until(lambda: len(h.counts("ratings")) == 8, "the rest of the log")
        return h

    h = asyncio.run(main())
    assert once_each(h, "ratings", [f"r{i}" for i in range(8)])
    assert "log_resets" not in h.store.hashes.get("rs:stats", {}) and h.store.read_fences("ratings")[0].epoch == 0


def test_redis_that_lost_its_last_writes_gets_them_again_from_the_fence() -> None:
    async def main() -> Harness:
        kafka = FakeKafka({RATINGS: records(RATINGS, 3, "r"), MOVIES: []})
        h = Harness(kafka)
        await h.run_until(lambda: len(h.counts("ratings")) == 3, "three records")
        saved = copy.deepcopy(h.store.hashes)  # what the AOF holds ...
        kafka.logs[RATINGS] = records(RATINGS, 6, "r")
        await h.run_until(lambda: len(h.counts("ratings")) == 6, "six records")
        h.store.hashes = saved  # ... after a kill -9: the writes of offsets 3..5 are gone
        kafka.logs[RATINGS] = records(RATINGS, 8, "r")
        await h.run_until(lambda: len(h.counts("ratings")) == 8, "the gap re-read")
        return h

    h = asyncio.run(main())
    assert once_each(h, "ratings", [f"r{i}" for i in range(8)])
    assert h.service._gap_checked == {RATINGS: 2}


def test_a_high_watermark_lagging_the_log_is_verified_not_taken_for_a_reset() -> None:
    async def main() -> Harness:
        kafka = FakeKafka({RATINGS: records(RATINGS, 64, "r"), MOVIES: []})
        h = Harness(kafka)
        await h.run_until(lambda: len(h.counts("ratings")) == 64, "the log")
        kafka.hw_lag = 30  # the broker now reports 34 for a log holding 64 records, idle ...
        await h.run_until(lambda: RATINGS in h.service._verified, "the fence re-read for verification")
        kafka.logs[RATINGS] = records(RATINGS, 80, "r")  # ... then 16 more arrive, still under-reported
        await h.run_until(lambda: len(h.counts("ratings")) == 80, "the new records")
        return h

    h = asyncio.run(main())
    assert once_each(h, "ratings", [f"r{i}" for i in range(80)])
    assert "log_resets" not in h.store.hashes.get("rs:stats", {}) and h.store.read_fences("ratings")[0].epoch == 0
