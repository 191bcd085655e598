"""The worker's batch consumer: one aiokafka consumer (group ``settings.app_id``) feeding the processors.

Why not a Faust agent per topic: Faust dispatches every message on its own
(two tasks and an ``asyncio.wait`` per message, an Event per message) before an
agent's ``take_events`` sees a batch; measured here that caps a worker at
~3.5-4k events/s with half a core idle, and Faust also hard-codes aiokafka's
fetch wait to 1,500 ms (``docs/infra.md``). This service instead asks aiokafka for
whatever is buffered (``getmany``, at most ``settings.stream_poll_max`` records)
and hands each topic's records to its processor in parts of at most ``settings.stream_batch_max``.

Loop, one poll at a time::

    records = getmany(max_records=poll_max, timeout_ms=...)   # no waiting to fill: adaptive batches
    per partition: the fetch high watermark -> a LogView (streams/log_identity.py)
    movies first (a rating of a just-announced movie then finds it), then ratings:
        plan -> dead letters sent and acknowledged -> one Lua script (state + offsets + log identity, fenced)
    then the positions follow the plan: a reset partition is re-read from its beginning, a gap from F + 1
    offsets committed to Kafka every ``settings.stream_commit_interval_s`` in the background
    (awaited on revoke and stop)

Delivery stays at-least-once and the effect exactly-once: a Kafka offset is
committed only after the Redis script holding that record's effect returned,
and a redelivered record (kill -9 between the two, a rebalance) is skipped by
the offset fence in Redis. The group id is ``settings.app_id``, so
``reelstream lag`` and the gateway's lag monitor read this consumer's commits.
Batches grow with load by themselves: while one batch is applied, aiokafka keeps
fetching in the background, and the next ``getmany`` takes everything buffered.

**The position follows the fence.** Redis, not the Kafka commit, says what was applied. On assignment and
after every outage the consumer seeks each owned partition to its fenced offset F (not F + 1; the beginning
when there is none), so the first record read is the fenced one: the processor checks its fingerprint (a
different record means the log was replaced) and skips it. A batch that starts beyond F + 1 (Redis lost
its last acknowledged writes: AOF everysec after a kill -9) is re-read from F + 1 once per (partition, F),
since a Kafka log may legitimately skip offsets (control records). A high watermark lower than the last one
seen drops that partition's records and re-reads from the fence to verify it.

**A broken broker connection re-verifies every fence.** A restarted broker may hold another log (a
memory-only Tansu starts empty), and producers flush what they held during the outage the moment it is
back: the new log can pass a small fence before any fetch shows a fallen high watermark, and reading it
on from F + 1 would skip its first F + 1 records. So when a connection to the broker breaks (aiokafka's
close callback), the loop drops a batch that may have come over a newer connection, applies one that
cannot have, and seeks every owned partition to its fence: the fenced record read back, another record
there, or silence at a shorter log decides, as above. The last high watermark of the old log is kept
for the reset's lost-events estimate.

**Outages.** Redis or the broker down (``RedisError``, ``KafkaError``, ``OSError``, ``TimeoutError``) never
ends the worker: the outage is logged once and counted (:class:`Outages`, the worker's ``/health``), the
assignment is paused and nothing is committed, Redis and the broker are retried with capped exponential
backoff (``worker_retry_initial_s`` .. ``worker_retry_max_s``), and when both answer the ``recover`` hook
runs (the Redis rebuild, when one is needed) and every owned partition is sought to its fence again, so
nothing is lost or applied twice. A bug in our own code still stops the worker: it must not loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from mode import Service
from redis.exceptions import RedisError

from reelstream.errors import InfraError
from reelstream.settings import Settings
from streams.backoff import Backoff
from streams.broker_watch import BrokerWatch
from streams.log_identity import NO_FENCE, Fence, LogView, did_highwater_fall, is_log_shorter
from streams.metrics import WorkerMetrics, metrics
from streams.processor import BatchPlan, Message

__all__ = ["INFRA_ERRORS", "BatchConsumer", "Outages", "infra_service", "verify_from"]

log = logging.getLogger(__name__)

#: Errors of the infrastructure (Redis, the broker, the network; reelstream's own InfraError wraps them):
#: retried, never fatal.
INFRA_ERRORS: tuple[type[BaseException], ...] = (RedisError, KafkaError, OSError, TimeoutError, InfraError)

#: Partitions without records are checked for a fallen or too-short log at most this often (seconds).
IDLE_CHECK_S = 0.5
#: The longest one ``getmany`` waits for records (ms) before the loop looks at stop, outage and recovery
#: flags again (records are returned as soon as they arrive; the broker's own wait is the fetch wait setting).
POLL_TIMEOUT_MS = 500
#: ``apply(topic, messages, logs)``: plan, dead-letter and commit one batch of one topic to Redis.
ApplyFn = Callable[[str, list[Message], dict[int, LogView]], Awaitable[BatchPlan | None]]
#: ``fences(topic)``: every partition's fence of ``topic`` in Redis.
FencesFn = Callable[[str], Awaitable[dict[int, Fence]]]
#: A health check or hook that raises one of :data:`INFRA_ERRORS` while its service is down.
CheckFn = Callable[[], Awaitable[None]]


def verify_from(fenced: int, highwater: int | None) -> int:
    """Where to seek to verify a fence F: F itself, or the last record below a high watermark at or below F.

    Tansu's fetch returns nothing from an offset at or beyond its high watermark, and that high watermark can
    lag records it has already returned; read from ``hw - 1``, the batch holding F comes back with it.

    >>> verify_from(31, 40), verify_from(31, 20), verify_from(31, 0), verify_from(31, None)
    (31, 19, 31, 31)
    """
    return highwater - 1 if highwater is not None and 0 < highwater <= fenced else fenced


def infra_service(exc: BaseException) -> str:
    """Which service an infrastructure error came from: ``broker`` or ``redis``."""
    return "broker" if isinstance(exc, KafkaError | TimeoutError) and not isinstance(exc, RedisError) else "redis"


class Outages:
    """What is down and since when: logged once per outage, counted, shown by the worker's ``/health``."""

    def __init__(self, worker_metrics: WorkerMetrics = metrics, clock: Callable[[], float] = time.time) -> None:
        self.metrics = worker_metrics
        self.clock = clock
        self.down: dict[str, tuple[float, str]] = {}  #: service -> (since, epoch seconds; the first error)

    @property
    def degraded(self) -> bool:
        return bool(self.down)

    def fail(self, service: str, exc: BaseException | str) -> bool:
        """Record ``service`` as down; True (and one warning) when this starts an outage."""
        if service in self.down:
            return False
        why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.down[service] = (self.clock(), why)
        self.metrics.outage(service, down=True)
        log.warning("%s unreachable (%s): consumption paused, retrying with backoff", service, why)
        return True

    def ok(self, service: str) -> bool:
        """Record ``service`` as up; True (and one line) when this ends an outage."""
        since = self.down.pop(service, None)
        if since is None:
            return False
        self.metrics.outage(service, down=False)
        log.warning("%s reachable again after %.1f s", service, self.clock() - since[0])
        return True

    def as_dict(self) -> dict[str, Any]:
        """The ``/health`` body: ``status`` (ok, degraded) and, per service down, since when and why."""
        return {
            "status": "degraded" if self.down else "ok",
            "down": {s: {"since_ms": int(t * 1000), "error": why} for s, (t, why) in self.down.items()},
        }


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: BatchConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # The batch in flight finishes (and its offsets are committed) before the partitions go.
        async with self.owner.lock:
            if not self.owner.outages.degraded:
                await self.owner.commit_offsets()
            self.owner.forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))
        self.owner.follow_fence(assigned)


class BatchConsumer(Service):
    """Consume the ratings, movies and impressions topics in batches; see the module docstring.

    ``fences`` reads the fences the positions follow (none: positions are left to Kafka), ``ping_redis`` and
    ``ping_broker`` raise while their service is down, and ``recover`` runs before consuming starts and after
    every outage (the worker's Redis rebuild hook).
    """

    def __init__(
        self,
        settings: Settings,
        apply: ApplyFn,
        *,
        fences: FencesFn | None = None,
        ping_redis: CheckFn | None = None,
        ping_broker: CheckFn | None = None,
        recover: CheckFn | None = None,
        outages: Outages | None = None,
        **kwargs: Any,
    ) -> None:
        self.settings = settings
        self.apply = apply
        self.read_fences = fences
        self.ping_redis = ping_redis
        self.ping_broker = ping_broker
        self.recover = recover
        self.outages = outages if outages is not None else Outages()
        self.lock = asyncio.Lock()
        self.pending: dict[TopicPartition, int] = {}  # next offset to commit, per partition
        self._last_commit = time.monotonic()
        self.consumer: AIOKafkaConsumer | None = None
        self._committing: asyncio.Future[None] | None = None
        self.recovery_needed = True  # before consuming starts: the rebuild hook, then the fences
        self._to_fence: set[TopicPartition] = set()  # partitions whose position must first follow the fence
        self._fences: dict[TopicPartition, Fence] = {}  # the latest fence read or written, per owned partition
        self._hw_seen: dict[TopicPartition, int] = {}  # the latest fetch high watermark, per partition
        self._fell: dict[TopicPartition, int] = {}  # partitions re-read after their high watermark fell: old one
        self._gap_checked: dict[TopicPartition, int] = {}  # fenced offset whose gap was re-read once
        self._verified: dict[TopicPartition, tuple[int, int | None]] = {}  # (fence, hw) last re-read to verify
        self._sought_ms: dict[TopicPartition, float] = {}  # when each partition was last sought to its fence
        self._idle_checked = 0.0  # when partitions without records were last looked at
        self.watch: BrokerWatch | None = None  # broken broker connections (installed with the consumer)
        self._broken_seen = 0  # breaks the loop has acted on
        self._hw_at_break: dict[TopicPartition, int] = {}  # each partition's high watermark then
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
            max_poll_records=s.stream_poll_max,
            session_timeout_ms=int(s.broker_session_timeout * 1000),
            heartbeat_interval_ms=int(s.broker_heartbeat_interval * 1000),
            metadata_max_age_ms=s.stream_metadata_max_age_ms,
        )

    def _watch_connections(self, consumer: AIOKafkaConsumer) -> None:
        """Count broker connections that break (:class:`streams.broker_watch.BrokerWatch`), keeping each
        partition's high watermark of the moment: the old log's last one, for the lost-events estimate."""
        self.watch = BrokerWatch(consumer._client)

        def keep_highwaters() -> None:
            for tp in consumer.assignment():
                hw = consumer.highwater(tp)
                if hw is not None:
                    self._hw_at_break[tp] = max(hw, self._hw_at_break.get(tp, -1))

        self.watch.on_break.append(keep_highwaters)

    def _verify_after_reconnect(self) -> None:
        """Seek every owned partition to its fence to verify it, keeping the old log's last high watermark."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        for tp in owned:
            if self._fences.get(tp, NO_FENCE).offset < 0 and tp not in self._hw_seen:
                continue
            known = (self._hw_seen.get(tp), self._hw_at_break.pop(tp, None), self._fell.get(tp))
            self._fell[tp] = max((h for h in known if h is not None), default=-1)
        log.warning("a broker connection broke: verifying the fences of %d partitions", len(owned))
        metrics.fence_seek("reconnect")
        self.follow_fence(owned)

    async def on_start(self) -> None:
        self.consumer = self._new_consumer()
        self._watch_connections(self.consumer)
        s = self.settings
        self.consumer.subscribe([s.topic_ratings, s.topic_movies, s.topic_impressions], listener=_Rebalance(self))
        await self.consumer.start()

    async def on_stop(self) -> None:
        if self.consumer is None:
            return
        async with self.lock:
            if not self.outages.degraded:
                await self.commit_offsets()
        await self.consumer.stop()

    # --- positions ---------------------------------------------------------------------------
    def follow_fence(self, partitions: Any) -> None:
        """Pause ``partitions`` until the loop has sought them to their fences (assignment, verification)."""
        tps = set(partitions)
        if tps and self.consumer is not None:
            self.consumer.pause(*tps)
        self._to_fence |= tps

    def forget(self, partitions: Any) -> None:
        """Drop what this consumer knew of partitions it no longer owns (the next owner reads the fence)."""
        for tp in partitions:
            self._to_fence.discard(tp)
            self._fences.pop(tp, None)
            self._gap_checked.pop(tp, None)
            self._verified.pop(tp, None)
            self._sought_ms.pop(tp, None)
            self.pending.pop(tp, None)

    def request_recovery(self) -> None:
        """Pause and recover before the next poll (called when Redis came back under the heartbeat)."""
        self.recovery_needed = True

    async def _seek_to_fences(self) -> None:
        """Seek each partition waiting in ``_to_fence`` to its fenced offset F (the beginning without one)."""
        assert self.consumer is not None
        owned = self.consumer.assignment()
        todo = {tp for tp in self._to_fence if tp in owned}
        self._to_fence &= owned
        if self.read_fences is None:
            self._to_fence -= todo
            self.consumer.resume(*todo)
            return
        for topic in sorted({tp.topic for tp in todo}):
            fences = await self.read_fences(topic)
            for tp in sorted((tp for tp in todo if tp.topic == topic), key=lambda t: t.partition):
                self._to_fence.discard(tp)
                if tp not in self.consumer.assignment():
                    continue  # revoked while the fences were read: its next owner seeks it
                fence = fences.get(tp.partition, NO_FENCE)
                self._fences[tp] = fence
                try:
                    if fence.offset >= 0:
                        self.consumer.seek(tp, verify_from(fence.offset, self.consumer.highwater(tp)))
                    else:
                        await self.consumer.seek_to_beginning(tp)
                    self.consumer.resume(tp)
                    self._sought_ms[tp] = time.time() * 1000
                except IllegalStateError:
                    continue  # revoked meanwhile (a rebalance runs alongside): the same
                metrics.fence_seek("fence")

    def _views(self, batch: dict[TopicPartition, list[Any]]) -> dict[str, dict[int, LogView]]:
        """Each partition's log as the consumer sees it, for the processor's fence.

        A suspicious log (its high watermark fell, or lies at or below the fence) is never judged from the
        high watermark alone: Tansu's can lag the records it returns. Its records are dropped and it is
        re-read from the fence (:func:`verify_from`), once per (fence, high watermark): the fenced record read
        back, or silence at the end of a log that stops before it, decides; a log read again from offset 0
        is told by its first record, the fence's origin (``streams.processor.fence_batch``). Partitions with
        records are looked at on every poll; the others every ``IDLE_CHECK_S``, since polls come hundreds
        of times a second under load.
        """
        assert self.consumer is not None
        views: dict[str, dict[int, LogView]] = {}
        owned = self.consumer.assignment()
        now = time.monotonic()
        look_at: Any = batch
        if now - self._idle_checked >= IDLE_CHECK_S:
            self._idle_checked = now
            look_at = owned | set(batch)
        for tp in list(look_at):
            if tp not in owned or tp in self._to_fence:
                batch.pop(tp, None)  # revoked since the fetch, or waiting for its fence: read again from there
                continue
            recs = batch.get(tp)
            hw = self.consumer.highwater(tp)
            if recs and (hw is None or hw < recs[-1].offset + 1):
                hw = recs[-1].offset + 1  # a record at offset o proves the log reaches o + 1
            prev = self._hw_seen.get(tp)
            fenced = self._fences.get(tp, NO_FENCE).offset
            suspicious = did_highwater_fall(prev, hw) or (not recs and is_log_shorter(hw, fenced))
            if suspicious and tp not in self._fell and self._verified.get(tp) != (fenced, hw):
                self._verified[tp] = (fenced, hw)
                self._fell[tp] = max(prev if prev is not None else -1, hw if hw is not None else -1)
                batch.pop(tp, None)
                log.warning("%s[%d]: high watermark %s (was %s, fence %d); verifying the fence", tp.topic,
                            tp.partition, hw, prev, fenced)  # fmt: skip
                self.follow_fence([tp])
                continue
            if recs or (tp in self._fell and is_log_shorter(hw, fenced) and self._fence_did_not_come_back(tp)):
                # with records: the processor's fence judges them; without: the fenced record was not in the
                # log read from F, which ends at or before F: the processor re-bases it (a shorter new log)
                seen = self._fell.get(tp, prev)
                views.setdefault(tp.topic, {})[tp.partition] = LogView(hw, seen, None, self._gap_checked.get(tp))
            if hw is not None and tp not in self._fell:
                self._hw_seen[tp] = hw
        return views

    def _fence_did_not_come_back(self, tp: TopicPartition) -> bool:
        """Fetches from the fenced offset went on for a while after the seek and returned nothing."""
        assert self.consumer is not None
        sought = self._sought_ms.get(tp)
        if sought is None:
            return False
        wait_ms = 2 * IDLE_CHECK_S * 1000
        polled = self.consumer.last_poll_timestamp(tp) or 0
        return time.time() * 1000 - sought >= wait_ms and polled >= sought + wait_ms / 2

    async def _follow(self, tp: TopicPartition, plan: BatchPlan, recs: list[Any] | None) -> None:
        """Move ``tp``'s position as its plan says, and remember what is to commit and the new fence."""
        assert self.consumer is not None
        p = tp.partition
        moved = plan.fence.get(p)
        if moved is not None:
            self._fences[tp] = moved[1]
        elif p in plan.stored:
            self._fences[tp] = plan.stored[p]
        decided = (
            moved is not None
            or p in plan.verified
            or p in plan.rewind
            or p in plan.gaps
            or any(r.partition == p for r in plan.resets)
        )
        # a batch wholly below the fence decided nothing: a partition being verified stays so (silence decides)
        fell = self._fell.pop(tp, None) if decided else self._fell.get(tp)
        hw = self.consumer.highwater(tp)
        if recs and (hw is None or hw < recs[-1].offset + 1):
            hw = recs[-1].offset + 1  # as in _views: the records outrank a lagging high watermark
        if hw is not None:
            self._hw_seen[tp] = hw
        for reset in plan.resets:
            if reset.partition == p:
                metrics.log_reset(plan.topic, reset.lost)
        if p in plan.rewind:
            self.pending.pop(tp, None)
            metrics.fence_seek("rewind")
            await self.consumer.seek_to_beginning(tp)
        elif p in plan.gaps:
            fenced = plan.gaps[p]
            self.pending.pop(tp, None)
            self._gap_checked[tp] = fenced
            metrics.fence_seek("gap")
            log.warning("%s[%d]: batch starts at %d, beyond the fence %d + 1; re-reading from %d once",
                        tp.topic, p, recs[0].offset if recs else -1, fenced, fenced + 1)  # fmt: skip
            if fenced < 0 and p not in plan.stored:
                self.recovery_needed = True  # no fence at all: Redis lost its state, rebuild first
            self.consumer.seek(tp, fenced + 1)
        elif recs:
            self.pending[tp] = recs[-1].offset + 1  # only now: at-least-once
        elif fell is not None and decided:
            self._hw_seen[tp] = hw if hw is not None else fell

    # --- commits -----------------------------------------------------------------------------
    async def commit_offsets(self) -> None:
        """Commit what Redis holds and wait for it (on revoke and stop)."""
        if self._committing is not None:
            await asyncio.shield(self._committing)
        task = self._start_commit()
        if task is not None:
            await asyncio.shield(task)

    def _start_commit(self) -> asyncio.Future[None] | None:
        """Send the pending offsets to the group coordinator in the background (the loop goes on)."""
        if not self.pending or self.consumer is None or self._committing is not None or self.outages.degraded:
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

    # --- the loop ----------------------------------------------------------------------------
    @Service.task
    async def _consume(self) -> None:
        await self.consume_loop()

    def _failed(self, exc: BaseException) -> None:
        """An infrastructure error: record the outage, pause everything, recover before the next poll."""
        self.outages.fail(infra_service(exc), exc)
        self.recovery_needed = True
        if self.consumer is not None:
            self.consumer.pause(*self.consumer.assignment())

    async def _recover(self) -> bool:
        """Paused: retry with capped backoff until Redis and the broker answer, run the recover hook, seek
        every owned partition to its fence and resume. False if the worker stops first."""
        assert self.consumer is not None
        s = self.settings
        backoff = Backoff(s.worker_retry_initial_s, s.worker_retry_max_s)
        self.consumer.pause(*self.consumer.assignment())
        while not self.should_stop:
            step = "redis"
            try:
                if self.ping_redis is not None:
                    await self.ping_redis()
                self.outages.ok("redis")
                step = "broker"
                if self.ping_broker is not None and "broker" in self.outages.down:
                    await self.ping_broker()
                self.outages.ok("broker")
                step = "redis"
                if self.recover is not None:
                    await self.recover()
                self.recovery_needed = False
                self.follow_fence(self.consumer.assignment())
                await self._seek_to_fences()
                return True
            except INFRA_ERRORS as exc:
                self.outages.fail("broker" if step == "broker" else infra_service(exc), exc)
                self.recovery_needed = True
                await self.sleep(backoff.next())
        return False

    async def consume_loop(self) -> None:
        """Poll, apply, record the offsets to commit; until the service stops."""
        assert self.consumer is not None
        interval = self.settings.stream_commit_interval_s
        while not self.should_stop:
            if self.recovery_needed or self.outages.degraded:
                if not await self._recover():
                    break
                continue
            try:
                if self._to_fence:
                    await self._seek_to_fences()
                most = self.settings.stream_poll_max
                batch = await self.consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=most)
            except (asyncio.CancelledError, IllegalStateError):
                break
            except INFRA_ERRORS as exc:  # the broker went away, or Redis while reading fences
                self._failed(exc)
                continue
            reconnected = self._broke_since_last_poll()
            if reconnected and self.watch is not None and self.watch.connected_since_break():
                batch = {}  # it may hold a new log's records: re-read from the fences
            if not await self._apply_polled(batch):
                continue
            if reconnected:
                self._verify_after_reconnect()
            if self.pending and time.monotonic() - self._last_commit >= interval:
                self._start_commit()  # a Kafka round trip; the next batch need not wait for it

    def _broke_since_last_poll(self) -> bool:
        """Whether the broker connection broke since the last poll (counted once)."""
        if self.watch is None or self.watch.breaks == self._broken_seen:
            return False
        self._broken_seen = self.watch.breaks
        return True

    async def _apply_polled(self, batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]) -> bool:
        """Apply one poll's records (and view changes), movies first; False after an infra failure."""
        views = self._views(batch)
        if not batch and not views:
            return True
        s = self.settings
        async with self.lock:
            # movies first (a rating may name a movie announced in the same poll), then ratings, impressions
            by_topic: dict[str, list[Message]] = {s.topic_movies: [], s.topic_ratings: [], s.topic_impressions: []}
            for tp, recs in batch.items():
                by_topic.setdefault(tp.topic, []).extend(
                    Message(r.topic, r.partition, r.offset, r.value, r.timestamp, r.key) for r in recs
                )
            try:
                for topic, msgs in by_topic.items():
                    if not msgs and not views.get(topic):
                        continue
                    plan = await self.apply(topic, msgs, views.get(topic, {}))
                    if plan is None:
                        continue
                    for p in sorted({m.partition for m in msgs} | set(views.get(topic, {}))):
                        tp = TopicPartition(topic, p)
                        await self._follow(tp, plan, batch.get(tp))
            except INFRA_ERRORS as exc:
                # Nothing of the failed part is committed to Kafka: after the outage every partition is
                # re-read from its fence, and what was applied before the error is skipped there.
                self._failed(exc)
                return False
        return True
