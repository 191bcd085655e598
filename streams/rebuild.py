"""Rebuilding the Redis feature tables: Redis = f(store HISTORY, archive, log tail).

Redis is a view (``docs/durability.md``), like a Faust table is a view of its changelog topic: every key
the worker writes is a deterministic function of the feature store's HISTORY and the records of the
ratings and movies topics, and :mod:`streams.archive` keeps those records on disk. So a Redis that lost
its state can be computed again instead of trusted or patched.

**When** (:func:`rebuild_needed`, in order): ``missing`` (no ``rs:seed`` marker: a fresh or flushed Redis),
``stale`` (the marker names another store or model version: user states depend on the model's weights),
``partial`` (a seed or rebuild that did not finish). A marker that is ``done`` and names the current
versions is trusted: that Redis holds the view. The worker calls :func:`rebuild_if_needed` in a thread at
start and after every Redis outage; ``reelstream rebuild`` runs it for operators.

**How.**

1. One rebuilder at a time: ``rs:rebuild:lock`` (SET NX with a ``rebuild_lock_ttl_s`` expiry, renewed after
   every batch). Others wait until it is gone, then look at the marker again (usually: nothing left to do).
   A killed rebuilder's lock expires and the next caller resumes its work.
2. ``missing`` or ``stale``: every ``rs:*`` key but the lock, the heartbeats and the archive status is
   deleted, and the marker is written first, with ``rebuild`` = ``running``.
3. HISTORY through the seed's path (:func:`streams.seed.fold_history`: pseudo-topic ``seed_topic``, fenced).
4. The archive through the worker's own processors, movies first, then ratings, then the served lists
   (impressions: attribution does not depend on arrival order, so the arms' counters come back as a clean
   run left them, docs/experiments.md): each partition's segments in
   (epoch, offset) order, ``rebuild_batch`` records per fenced Lua script, under the record's real topic,
   partition and offset, with the segment's epoch as the log view
   (:class:`~streams.log_identity.LogView`): crossing an archived reset re-bases the fence
   (``NEW_EPOCH``) exactly as a live worker's reset did. The offset fences and their log identities
   therefore end where a clean worker's would after reading those logs.
5. The marker's ``rebuild`` = ``done``. The worker then seeks every partition to its fence and reads the
   log tail (what the broker holds beyond the archive) from there.

**Exactly once, crash-safe.** Every write is fenced (HISTORY's by row index, the archive's by offset and
epoch), and the marker says ``running`` until the end, so a rerun after a crash at any point skips what
was applied and does the rest. Segments already applied (by the fences) are not even read.

**Re-validation.** The archive holds raw records, valid or not; the processors judge them again. Their
verdicts are deterministic for past events (the rating contract's only clock is the future bound,
``event_max_future_ms``: an event refused live as too far in the future may be accepted by a later
rebuild). Dead letters are not sent again (the live worker sent them); they are counted.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from bootstrap.store import current_version, load_store
from models.runtime import ModelRuntime, current_model_dir
from reelstream.errors import DataError, InfraError, ReelstreamError
from reelstream.settings import Settings
from schemas import redis_keys as keys
from streams.archive import archived_partitions, list_segments, read_segments
from streams.log_identity import LogView
from streams.online import OnlineRatingModel
from streams.processor import BatchPlan, ImpressionProcessor, Message, MovieProcessor, Processor, RatingProcessor
from streams.seed import (
    RUNNING,
    SeedSummary,
    delete_feature_tables,
    fold_history,
    live_workers,
    read_marker,
    seed_state,
)
from streams.store import RedisFeatureTables

__all__ = ["RebuildLockLost", "RebuildSummary", "rebuild", "rebuild_if_needed", "rebuild_needed"]

log = logging.getLogger(__name__)

#: ``rs:seed`` ``rebuild`` field values.
REBUILDING, REBUILT = "running", "done"
#: Keys a rebuild never deletes: its own lock, the workers' heartbeats, the archiver's status.
KEPT = (keys.REBUILD_LOCK, keys.worker(""), keys.ARCHIVE)
#: Seconds between looks at another rebuilder's lock while waiting for it.
WAIT_POLL_S = 0.2

#: ``on_progress(phase, done, total)``: phase ``history`` or ``archive``, in rows / records.
ProgressFn = Callable[[str, int, int], None]

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RebuildLockLost(InfraError):
    """This rebuilder's lock expired and another took over (it stalled longer than ``rebuild_lock_ttl_s``)."""


@dataclass
class RebuildSummary:
    """What one rebuild did."""

    reason: str  #: ``missing``, ``stale``, ``partial`` or ``forced``
    store_version: int
    model_version: str
    deleted_keys: int = 0
    history: SeedSummary | None = None
    archive_records: int = 0  #: records in the archive's segments (every topic, partition and epoch)
    records_read: int = 0  #: of those, read by this call (segments already fenced are skipped unread)
    applied: int = 0  #: ratings folded in from the archive by this call
    movies: int = 0  #: movie announcements applied by this call
    impressions: int = 0  #: served lists attributed by this call
    skipped: int = 0  #: archived records already applied (an earlier run's fences)
    dead: int = 0  #: archived records the processors refused (counted, not sent again)
    dead_reasons: dict[str, int] = field(default_factory=dict)
    epochs_crossed: int = 0  #: archived log resets re-based while applying
    partitions: int = 0
    segments: int = 0
    batches: int = 0
    waited_s: float = 0.0  #: time spent waiting for another rebuilder's lock
    seconds: float = 0.0

    def __str__(self) -> str:
        history = self.history.applied if self.history else 0
        return (
            f"{self.reason}: {self.deleted_keys:,} keys deleted, HISTORY {history:,} ratings applied, archive "
            f"{self.archive_records:,} records in {self.segments:,} segments of {self.partitions} partitions "
            f"({self.applied:,} ratings, {self.movies:,} movies and {self.impressions:,} served lists applied, "
            f"{self.skipped:,} already applied, "
            f"{self.dead:,} refused, {self.epochs_crossed} log reset(s) crossed) in {self.seconds:.1f} s"
        )


def rebuild_needed(marker: dict[str, str] | None, store_version: int, model_version: str) -> str | None:
    """Why Redis must be rebuilt (``missing``, ``stale``, ``partial``), or None when it holds the view."""
    state = seed_state(marker, store_version, model_version)
    if state == "done":
        assert marker is not None
        return "partial" if marker.get("rebuild") == REBUILDING else None
    return state


def _versions(settings: Settings) -> tuple[int, str]:
    """The current store and model versions from their small metadata files (the worker's cheap check)."""
    name = current_version(settings.store_dir)
    if name is None:
        raise DataError("no feature store yet: run `reelstream bootstrap` first", path=settings.store_dir)
    meta = current_model_dir(settings.models_dir) / "metadata.json"
    try:
        model_version = str(json.loads(meta.read_text()).get("model_version", "unversioned"))
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable model metadata ({exc})", path=meta) from None
    return int(name[1:]), model_version


class _Lock:
    """``rs:rebuild:lock``: one holder, an expiry renewed after every batch."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self.client = client
        self.ttl_ms = ttl_s * 1000
        self.token = f"{uuid.uuid4().hex}"
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)

    def acquire(self) -> bool:
        return bool(self.client.set(keys.REBUILD_LOCK, self.token, nx=True, px=self.ttl_ms))

    def wait_released(self) -> float:
        """Block until no one holds the lock (it expires by itself if its holder died); returns seconds waited."""
        started = time.monotonic()
        logged = False
        while self.client.exists(keys.REBUILD_LOCK):
            if not logged:
                log.info("another process is rebuilding Redis; waiting for it to finish")
                logged = True
            time.sleep(WAIT_POLL_S)
        return time.monotonic() - started

    def renew(self) -> None:
        if not self._renew(keys=[keys.REBUILD_LOCK], args=[self.token, self.ttl_ms]):
            raise RebuildLockLost("the rebuild lock expired and another process took over; this rebuild stops")

    def release(self) -> None:
        self._release(keys=[keys.REBUILD_LOCK], args=[self.token])


def rebuild_if_needed(
    settings: Settings, client: redis.Redis, *, on_progress: ProgressFn | None = None
) -> RebuildSummary | None:
    """Rebuild Redis when its state is missing, stale or partial (module docstring); None when it holds the view.

    Synchronous and blocking (the worker runs it in a thread); Redis errors propagate (the caller retries).
    """
    return _rebuild(settings, client, force=False, on_progress=on_progress)


def rebuild(settings: Settings, client: redis.Redis, *, on_progress: ProgressFn | None = None) -> RebuildSummary:
    """Rebuild Redis from scratch even when its marker is current (``reelstream rebuild --force``).

    Refused while a worker heartbeat is alive: a running worker would apply the log on top of the deletion.
    """
    workers = live_workers(client)
    if workers:
        raise DataError(f"worker(s) {', '.join(workers)} are running; stop them before a forced rebuild")
    summary = _rebuild(settings, client, force=True, on_progress=on_progress)
    assert summary is not None
    return summary


def _rebuild(settings: Settings, client: redis.Redis, *, force: bool, on_progress: ProgressFn | None
             ) -> RebuildSummary | None:  # fmt: skip
    store_version, model_version = _versions(settings)
    lock = _Lock(client, settings.rebuild_lock_ttl_s)
    waited = 0.0
    while True:
        reason = "forced" if force else rebuild_needed(read_marker(client), store_version, model_version)
        if reason is None:
            return None
        if lock.acquire():
            # Look again under the lock: the holder we waited for may have just finished.
            reason = "forced" if force else rebuild_needed(read_marker(client), store_version, model_version)
            if reason is None:
                lock.release()
                return None
            break
        waited += lock.wait_released()
        force = False  # a forced rebuild someone else finished meanwhile is not repeated
    started = time.perf_counter()
    summary = RebuildSummary(reason, store_version, model_version, waited_s=waited)
    try:
        _run(settings, client, lock, summary, on_progress)
    finally:
        try:
            lock.release()
        except redis.RedisError:
            log.warning("could not release the rebuild lock; it expires in %d s", settings.rebuild_lock_ttl_s)
    summary.seconds = time.perf_counter() - started
    log.info("rebuilt Redis (%s)", summary)
    return summary


def _run(settings: Settings, client: redis.Redis, lock: _Lock, summary: RebuildSummary,
         on_progress: ProgressFn | None) -> None:  # fmt: skip
    store = load_store(settings.store_dir)
    runtime = ModelRuntime.load(current_model_dir(settings.models_dir), scoring=False)  # fold-in only
    if store.version != summary.store_version or runtime.version != summary.model_version:
        raise ReelstreamError("the store or the model changed while the rebuild started; run it again")
    now_ms = int(time.time() * 1000)
    if summary.reason in ("missing", "stale", "forced"):
        summary.deleted_keys = delete_feature_tables(client, keep=KEPT)
        client.hset(keys.SEED, mapping={
            "status": RUNNING, "rebuild": REBUILDING, "store_version": summary.store_version,
            "model_version": summary.model_version, "rows": store.history.height, "topic": settings.seed_topic,
            "started_ms": now_ms, "rebuild_started_ms": now_ms,
        })  # fmt: skip
    else:
        client.hset(keys.SEED, mapping={"rebuild": REBUILDING, "rebuild_started_ms": now_ms})
    lock.renew()

    def history_progress(done: int, total: int) -> None:
        lock.renew()
        if on_progress is not None:
            on_progress("history", done, total)

    summary.history = fold_history(  # bulk where Redis holds nothing else yet (streams/bulk_seed.py)
        settings, client, runtime, store.history, store.version, on_progress=history_progress, bulk=True
    )
    _apply_archive(settings, client, runtime, lock, summary, on_progress)
    client.hset(keys.SEED, mapping={
        "rebuild": REBUILT, "rebuilt_ms": int(time.time() * 1000), "archive_records": summary.archive_records,
    })  # fmt: skip


def _apply_archive(settings: Settings, client: redis.Redis, runtime: ModelRuntime, lock: _Lock,
                   summary: RebuildSummary, on_progress: ProgressFn | None) -> None:  # fmt: skip
    """Every archived record through the worker's processors, movies first (module docstring, step 4)."""
    store = RedisFeatureTables(client)
    processors: list[tuple[str, Processor]] = [
        (settings.topic_movies, MovieProcessor(runtime, store, topic=settings.topic_movies)),
        (settings.topic_ratings, RatingProcessor(
            runtime, store, topic=settings.topic_ratings, min_ts_ms=settings.event_min_ts_ms,
            max_future_ms=settings.event_max_future_ms, half_life_s=settings.trending_half_life_s,
            probe_user_base=settings.probe_user_base, online=OnlineRatingModel(seed=0),
        )),
        (settings.topic_impressions, ImpressionProcessor(store, topic=settings.topic_impressions,
                                                         window_s=settings.attribution_window_s)),
    ]  # fmt: skip
    archive_dir = settings.archive_dir
    layout = {
        (topic, p): list_segments(archive_dir, topic, p) for topic, _ in processors
        for p in archived_partitions(archive_dir, topic)
    }  # fmt: skip
    summary.partitions = sum(1 for segs in layout.values() if segs)
    summary.segments = sum(len(segs) for segs in layout.values())
    summary.archive_records = sum(seg.span for segs in layout.values() for seg in segs)
    done = 0
    reasons: Counter[str] = Counter()
    if on_progress is not None:
        on_progress("archive", 0, summary.archive_records)
    for topic, processor in processors:
        fences = store.read_fences(topic)
        for t, partition in layout:
            if t != topic:
                continue
            fence = fences.get(partition)
            for segment, frame in read_segments(archive_dir, topic, partition):
                if fence is not None and (
                    segment.epoch < fence.epoch or (segment.epoch == fence.epoch and segment.last <= fence.offset)
                ):
                    summary.skipped += segment.span  # applied by an earlier (interrupted) run: not even planned
                    done += segment.span
                    continue
                view = {partition: LogView(epoch=segment.epoch)}
                for chunk in frame.iter_slices(settings.rebuild_batch):
                    msgs = [
                        Message(topic, partition, int(off), value or b"", int(ts), key)
                        for off, ts, key, value in chunk.select("offset", "timestamp_ms", "key", "value").iter_rows()
                    ]  # fmt: skip
                    plan = _commit(processor, msgs, view)
                    summary.records_read += len(msgs)
                    summary.batches += 1
                    summary.skipped += plan.skipped
                    summary.dead += len(plan.dead)
                    summary.epochs_crossed += len(plan.resets)
                    reasons.update(str(d.record["reason"]) for d in plan.dead)
                    if isinstance(processor, MovieProcessor):
                        summary.movies += plan.applied
                    elif isinstance(processor, ImpressionProcessor):
                        summary.impressions += plan.applied
                    else:
                        summary.applied += plan.applied
                    done += len(msgs)
                    lock.renew()
                    if on_progress is not None:
                        on_progress("archive", min(done, summary.archive_records), summary.archive_records)
    summary.dead_reasons = dict(reasons)


def _commit(processor: Processor, msgs: list[Message], logs: dict[int, LogView]) -> BatchPlan:
    """Plan and commit one batch, re-planning while the fence moved (the worker's loop, without dead letters)."""
    while True:
        plan = processor.plan(msgs, logs)
        if processor.commit(plan):
            return plan
