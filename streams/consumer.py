"""The worker's batch consumer: one aiokafka consumer (group ``settings.app_id``) feeding the processors.

Why not a Faust agent per topic: Faust dispatches every message on its own
(two tasks and an ``asyncio.wait`` per message, an Event per message) before an
agent's ``take_events`` sees a batch; measured here that caps a worker at
~3.5-4k events/s with half a core idle, and Faust also hard-codes aiokafka's
fetch wait to 1,500 ms (``INFRA.md``). This service instead asks aiokafka for
whatever is buffered (``getmany``, at most ``settings.stream_batch_max`` records)
and hands each topic's records to its processor as one batch.

Loop, one poll at a time::

    records = getmany(max_records=batch_max, timeout_ms=...)   # no waiting to fill: adaptive batches
    movies first (a rating of a just-announced movie then finds it), then ratings:
        plan -> dead letters sent and acknowledged -> one Lua script (state + offsets, fenced)
    offsets committed to Kafka every ``settings.stream_commit_interval_s`` in the background
    (awaited on revoke and stop)

Delivery stays at-least-once and the effect exactly-once: a Kafka offset is
committed only after the Redis script holding that record's effect returned,
and a redelivered record (kill -9 between the two, a rebalance) is skipped by
the offset fence in Redis. The group id is ``settings.app_id``, so
``reelstream lag`` and the gateway's lag monitor read this consumer's commits.
Batches grow with load by themselves: while one batch is applied, aiokafka keeps
fetching in the background, and the next ``getmany`` takes everything buffered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from mode import Service
from redis.exceptions import RedisError

from reelstream.settings import Settings
from streams.processor import Message

__all__ = ["BatchConsumer"]

log = logging.getLogger(__name__)

#: ``apply(topic, messages)``: plan, dead-letter and commit one batch of one topic to Redis.
ApplyFn = Callable[[str, list[Message]], Awaitable[None]]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: BatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # The batch in flight finishes (and its offsets are committed) before the partitions go.
        async with self.owner.lock:
            await self.owner.commit_offsets()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


class BatchConsumer(Service):
    """Consume ``settings.topic_ratings`` and ``settings.topic_movies`` in batches; see the module docstring."""

    def __init__(self, settings: Settings, apply: ApplyFn, **kwargs: Any) -> None:
        self.settings = settings
        self.apply = apply
        self.lock = asyncio.Lock()
        self.pending: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._last_commit = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None
        self._committing: asyncio.Future[None] | None = None
        super().__init__(**kwargs)

    def _new_consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.app_id,
            client_id=f"{s.app_id}-{s.worker_name or 'worker'}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=s.stream_fetch_max_wait_ms,
            max_poll_records=s.stream_batch_max,
            session_timeout_ms=int(s.broker_session_timeout * 1000),
            heartbeat_interval_ms=int(s.broker_heartbeat_interval * 1000),
        )

    async def on_start(self) -> None:
        self.consumer = self._new_consumer()
        self.consumer.subscribe([self.settings.topic_ratings, self.settings.topic_movies], listener=_Rebalance(self))
        await self.consumer.start()

    async def on_stop(self) -> None:
        if self.consumer is None:
            return
        async with self.lock:
            await self.commit_offsets()
        await self.consumer.stop()

    async def commit_offsets(self) -> None:
        """Commit what Redis holds and wait for it (on revoke and stop)."""
        if self._committing is not None:
            await asyncio.shield(self._committing)
        task = self._start_commit()
        if task is not None:
            await asyncio.shield(task)

    def _start_commit(self) -> asyncio.Future[None] | None:
        """Send the pending offsets to the group coordinator in the background (the loop goes on)."""
        if not self.pending or self.consumer is None or self._committing is not None:
            return None
        owned = self.consumer.assignment()
        offsets = {tp: off for tp, off in self.pending.items() if tp in owned}
        self.pending.clear()
        self._last_commit = time.monotonic()
        if not offsets:
            return None
        self._committing = asyncio.ensure_future(self._commit(offsets))
        return self._committing

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # A rebalance or a broker hiccup: retried with the next commit if this process still owns the
            # partitions; otherwise the next owner redelivers and the offset fence skips what was applied.
            log.warning("offset commit failed (%s)", exc)
            for tp, off in offsets.items():
                self.pending.setdefault(tp, off)
        finally:
            self._committing = None

    @Service.task
    async def _consume(self) -> None:
        await self.consume_loop()

    async def consume_loop(self) -> None:
        """Poll, apply, record the offsets to commit; until the service stops."""
        assert self.consumer is not None
        ratings, movies = self.settings.topic_ratings, self.settings.topic_movies
        interval = self.settings.stream_commit_interval_s
        while not self.should_stop:
            try:
                batch = await self.consumer.getmany(timeout_ms=500, max_records=self.settings.stream_batch_max)
            except (asyncio.CancelledError, IllegalStateError):
                break
            except KafkaError as exc:  # the broker went away or the group is rebalancing: aiokafka reconnects
                log.warning("fetch failed (%s); polling again in 1 s", exc)
                await self.sleep(1.0)
                continue
            if batch:
                async with self.lock:
                    by_topic: dict[str, list[Message]] = {movies: [], ratings: []}
                    for tp, recs in batch.items():
                        topic = by_topic.setdefault(tp.topic, [])
                        topic.extend(Message(r.topic, r.partition, r.offset, r.value, r.timestamp) for r in recs)
                    if not await self._apply_until_done(by_topic):
                        break  # stopping: nothing of this batch is committed to Kafka
                    for tp, recs in batch.items():  # only now: at-least-once
                        self.pending[tp] = recs[-1].offset + 1
            if self.pending and time.monotonic() - self._last_commit >= interval:
                self._start_commit()  # a Kafka round trip; the next batch need not wait for it

    async def _apply_until_done(self, by_topic: dict[str, list[Message]]) -> bool:
        """Apply the batch, retrying the same records while Redis fails; False if the worker stops first.

        A retry after a partial success is safe: the part already applied is skipped by the offset fence.
        """
        while True:
            try:
                for topic, msgs in by_topic.items():  # movies first
                    if msgs:
                        await self.apply(topic, msgs)
                return True
            except (RedisError, KafkaError, OSError):  # infrastructure: retry; a bug in our code stops the worker
                log.exception("applying a batch failed; retrying it in 1 s")
                await self.sleep(1.0)
                if self.should_stop:
                    return False
