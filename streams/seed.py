"""Seeding Redis with HISTORY: in bulk (:mod:`streams.bulk_seed`), or every rating through the worker's own path.

By default ``reelstream seed`` computes each user's final state at once and writes it (the bulk path,
>10x faster; its module docstring says how it matches the per-event path); ``--per-event`` folds HISTORY
in as described below, the reference the bulk path is tested against. The bulk path is taken only where
nothing but HISTORY can be in Redis: no seed offsets yet (a per-event run in progress continues per
event), no stream event applied by a worker, no hot swap; a bulk run in progress is always continued.

The live system's state is STREAMING = HISTORY + the stream events the worker
folds in (docs/evaluation.md). The worker only sees the ratings topic, so
``reelstream seed`` applies the feature store's HISTORY split first, in time
order, through exactly what the worker runs per batch: :class:`RatingProcessor`
(plan: decode, validate, fold in) and :class:`RedisFeatureTables` (one fenced Lua
script per batch). Users' state, rated set, recent list and statistics, item
aggregates, popularity and trending are therefore what the worker would have
written had these events come through Kafka.

**Exactly once, crash-safe.** HISTORY is a pseudo-topic (``settings.seed_topic``,
never created on the broker) with one partition, 0, whose offset is the row
index in the store's HISTORY order. Each batch commits its highest row index to
``rs:offsets:{seed_topic}`` in the same atomic script as its effect, and rows at
or below it are skipped: a second run applies nothing, a run killed midway and
rerun continues where the last committed batch ended.

**The marker** ``rs:seed`` records what was seeded (store version, model
version, row count, status). States depend on the model's weights and row
indexes on the store version, so a marker for another model or store version
is refused; ``--reset`` deletes every ``rs:*`` key (SCAN + UNLINK) and seeds
again. Whenever seeding starts from a Redis in which the worker applied
nothing (a fresh Redis, or after ``--reset``), the worker group's committed
Kafka offsets are rewound to the start of the ratings and movies topics, so
the worker re-reads the whole stream on top of HISTORY instead of resuming
past events this Redis never saw.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import redis

from bootstrap.store import load_store
from models.runtime import ModelRuntime, current_model_dir
from reelstream.errors import DataError, InfraError
from reelstream.redis_client import redis_client
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.wire import codec_for
from streams.bulk_seed import BULK_ROWS, bulk_fold
from streams.events import rating_event, user_key
from streams.online import OnlineRatingModel
from streams.processor import Message, RatingProcessor
from streams.store import RedisFeatureTables

__all__ = [
    "SeedSummary",
    "delete_feature_tables",
    "fold_history",
    "live_workers",
    "read_marker",
    "rewind_worker_group",
    "seed_history",
    "seed_state",
]

#: ``rs:seed`` status while batches are being applied / once every row is.
RUNNING, DONE = "running", "done"


@dataclass
class SeedSummary:
    """What one ``seed_history`` call did."""

    rows: int  #: HISTORY rows in the store version
    applied: int = 0  #: rows this call folded in
    skipped: int = 0  #: rows already applied by an earlier run (offset fence)
    dead: int = 0  #: rows the worker's rules refused (counted in ``rs:stats.dead_letters``)
    dead_reasons: dict[str, int] = field(default_factory=dict)
    users: int = 0  #: distinct users among the applied rows
    batches: int = 0
    seconds: float = 0.0
    deleted_keys: int = 0  #: ``rs:*`` keys removed by ``reset``
    rewound: int = 0  #: partitions of the worker group rewound to the start
    store_version: int = 0
    model_version: str = ""
    path: str = "per-event"  #: ``bulk`` or ``per-event``: how this call applied the rows

    @property
    def ratings_per_s(self) -> float:
        return self.applied / self.seconds if self.seconds > 0 else 0.0


def read_marker(client: redis.Redis) -> dict[str, str] | None:
    """``rs:seed`` as text, or None when nothing was seeded."""
    raw = client.hgetall(keys.SEED)
    return keys.text_hash(raw) if raw else None


def seed_state(marker: dict[str, str] | None, store_version: int, model_version: str) -> str:
    """``missing``, ``stale`` (another store or model version), ``partial`` (interrupted) or ``done``."""
    if marker is None:
        return "missing"
    if marker.get("store_version") != str(store_version):
        return "stale"
    # mid-swap (streams/swap.py) users' states belong to the seeded model or to the one being swapped in
    if model_version not in (marker.get("model_version"), marker.get("swap_to")):
        return "stale"
    return "done" if marker.get("status") == DONE else "partial"


def live_workers(client: redis.Redis) -> list[str]:
    """Names of the workers whose heartbeat key has not expired."""
    prefix = keys.worker("")
    names = []
    for raw in client.scan_iter(match=keys.worker("*"), count=1000):
        name = raw.decode()[len(prefix) :]
        if not name.endswith(":freshness"):
            names.append(name)
    return sorted(names)


def delete_feature_tables(client: redis.Redis, chunk: int = 1000, keep: tuple[str, ...] = ()) -> int:
    """UNLINK every ``rs:*`` key (SCAN, never FLUSHDB: other apps may share the database); returns the count.

    Keys starting with one of ``keep`` stay (a rebuild keeps its lock, heartbeats and the archive status).
    """
    deleted = 0
    batch: list[bytes] = []
    kept = tuple(k.encode() for k in keep)
    for raw in client.scan_iter(match=f"{keys.PREFIX}:*", count=chunk):
        if kept and raw.startswith(kept):
            continue
        batch.append(raw)
        if len(batch) >= chunk:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


async def rewind_worker_group(settings: Settings, timeout_s: float = 30.0) -> int:
    """Commit offset 0 for every partition of the ratings and movies topics that group ``app_id`` committed.

    Returns how many partitions were rewound (0 when the group never committed). The
    group must have no live member (a manual-assignment commit is refused otherwise).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from streams.admin import started_admin

    topics = settings.consumed_topics
    admin = await started_admin(settings, timeout_s)
    try:
        meta = await admin.describe_topics(list(topics))
        tps = [
            TopicPartition(m["topic"], p["partition"])
            for m in meta if m.get("error_code", 0) == 0
            for p in m.get("partitions", [])
        ]  # fmt: skip
        if not tps:
            return 0
        # Tansu needs the partitions named (docs/infra.md, defect 2).
        got = await admin.list_consumer_group_offsets(settings.app_id, partitions=tps)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise InfraError(f"broker at {settings.kafka_bootstrap} unreachable: {exc}") from None
    finally:
        await admin.close()
    committed = [tp for tp, om in got.items() if om is not None and om.offset > 0]
    if not committed:
        return 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=settings.app_id, enable_auto_commit=False
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        consumer.assign(committed)
        await consumer.commit({tp: 0 for tp in committed})
    except (KafkaError, OSError, TimeoutError) as exc:
        raise InfraError(
            f"could not rewind consumer group {settings.app_id!r} ({exc}); stop its workers and run the seed again"
        ) from None
    finally:
        await consumer.stop()
    return len(committed)


def _stale_message(marker: dict[str, str], store_version: int, model_version: str) -> str:
    return (
        f"Redis was seeded for store v{marker.get('store_version')} / model {marker.get('model_version')}, "
        f"not store v{store_version} / model {model_version}: users' states depend on the model's weights, so "
        "they cannot be mixed; `reelstream seed --reset` deletes the reelstream feature tables (rs:* keys) and "
        "seeds again, and the worker then re-reads the stream from the start"
    )


def seed_history(
    settings: Settings,
    *,
    reset: bool = False,
    batch_size: int | None = None,
    limit: int | None = None,
    client: redis.Redis | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    rewind: bool = True,
    per_event: bool = False,
    after_batch: Callable[[int], None] | None = None,
) -> SeedSummary:
    """Apply the current store version's HISTORY to Redis (see the module docstring).

    ``batch_size`` defaults to ``settings.seed_batch`` (per event) or ``settings.seed_bulk_rows`` (bulk);
    ``limit`` seeds only the first N rows (tests); ``on_progress(done, total)`` is called after every batch;
    ``rewind=False`` leaves the worker group's Kafka offsets alone; ``per_event`` takes the per-event path
    (unless a bulk seed is in progress: it is continued);
    ``after_batch(batches)`` runs after each bulk user batch (tests interrupt there).
    """
    store = load_store(settings.store_dir)
    runtime = ModelRuntime.load(current_model_dir(settings.models_dir), scoring=False)  # fold-in only
    history = store.history.select("user_id", "movie_id", "rating", "ts")
    total = history.height if limit is None else min(limit, history.height)
    summary = SeedSummary(rows=total, store_version=store.version, model_version=runtime.version)
    owns_client = client is None
    client = client or redis_client(settings.redis_url)
    try:
        _prepare(settings, client, summary, reset=reset, rewind=rewind)
        in_progress = BULK_ROWS in (read_marker(client) or {})  # never folded in per event a second time
        if in_progress or (not per_event and _bulk_allowed(settings, client, runtime)):
            _apply_bulk(settings, client, runtime, history.head(total), summary, batch_size, on_progress, after_batch)
        else:
            _apply(settings, client, runtime, history.head(total), summary, batch_size or settings.seed_batch,
                   on_progress)  # fmt: skip
    finally:
        if owns_client:
            client.close()
    return summary


def fold_history(
    settings: Settings,
    client: redis.Redis,
    runtime: ModelRuntime,
    history: pl.DataFrame,
    store_version: int,
    *,
    batch_size: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    bulk: bool = False,
) -> SeedSummary:
    """Fold ``history`` (the store's HISTORY) in, fenced, without :func:`seed_history`'s checks of what Redis holds.

    For :mod:`streams.rebuild`, which owns the marker's ``rebuild`` field and the lock; sets ``status`` done.
    Per event unless ``bulk`` (where :func:`_bulk_allowed`); an interrupted bulk seed is always continued in
    bulk (folding its rows again per event would count its users' ratings twice).
    """
    history = history.select("user_id", "movie_id", "rating", "ts")
    summary = SeedSummary(rows=history.height, store_version=store_version, model_version=runtime.version)
    marker = read_marker(client) or {}
    if BULK_ROWS in marker or (bulk and _bulk_allowed(settings, client, runtime)):
        _apply_bulk(settings, client, runtime, history, summary, batch_size, on_progress, None)
    else:
        _apply(settings, client, runtime, history, summary, batch_size or settings.seed_batch, on_progress)
    return summary


def _bulk_allowed(settings: Settings, client: redis.Redis, runtime: ModelRuntime) -> bool:
    """Whether the bulk path may write final values: only HISTORY can be in Redis (module docstring)."""
    marker = read_marker(client) or {}
    if BULK_ROWS in marker:
        return True  # continue the bulk run in progress
    if client.exists(keys.offsets(settings.seed_topic)):
        return False  # a per-event run applied rows (or a seed finished): the fence decides what is left
    if client.exists(keys.offsets(settings.topic_ratings), keys.offsets(settings.topic_movies)):
        return False  # stream events are in Redis: the per-event path folds HISTORY in on top of them
    serving = client.hget(keys.MODEL, "serving")
    return serving is None or keys.text(serving) == runtime.version


def _apply_bulk(
    settings: Settings, client: redis.Redis, runtime: ModelRuntime, history: pl.DataFrame, summary: SeedSummary,
    batch_rows: int | None, on_progress: Callable[[int, int], None] | None,
    after_batch: Callable[[int], None] | None,
) -> None:  # fmt: skip
    started = time.perf_counter()
    summary.path = "bulk"
    result = bulk_fold(settings, client, runtime, history, marker=read_marker(client) or {},
                       batch_rows=batch_rows, on_progress=on_progress, after_batch=after_batch)  # fmt: skip
    summary.seconds = time.perf_counter() - started
    summary.applied, summary.skipped, summary.dead = result.applied, result.skipped, result.dead
    summary.dead_reasons, summary.users, summary.batches = result.dead_reasons or {}, result.users, result.batches
    _mark_done(settings, client, summary, history.height)


def _prepare(settings: Settings, client: redis.Redis, summary: SeedSummary, *, reset: bool, rewind: bool) -> None:
    """Check the marker, reset if asked, rewind the worker group if this Redis never saw the stream."""
    try:
        marker = read_marker(client)
    except redis.RedisError as exc:
        raise InfraError(f"Redis at {settings.redis_url} unreachable: {exc}") from None
    state = seed_state(marker, summary.store_version, summary.model_version)
    workers = live_workers(client)
    if reset:
        if workers:
            raise DataError(f"worker(s) {', '.join(workers)} are running; stop them (`reelstream down`) before --reset")
        summary.deleted_keys = delete_feature_tables(client)
        marker, state = None, "missing"
    elif state == "stale":
        assert marker is not None
        raise DataError(_stale_message(marker, summary.store_version, summary.model_version))
    if state == "missing":
        applied = {keys.offsets(settings.topic_ratings), keys.offsets(settings.topic_movies)}
        if any(client.exists(k) for k in applied):
            raise DataError(
                "Redis already holds stream events the worker applied without HISTORY under them; "
                "`reelstream seed --reset` deletes the reelstream feature tables (rs:* keys) and seeds in order"
            )
        if workers:
            raise DataError(f"worker(s) {', '.join(workers)} are running; stop them before seeding an empty Redis")
        if rewind:
            summary.rewound = asyncio.run(rewind_worker_group(settings))
        client.hset(keys.SEED, mapping={
            "status": RUNNING, "store_version": summary.store_version, "model_version": summary.model_version,
            "rows": summary.rows, "topic": settings.seed_topic, "started_ms": int(time.time() * 1000),
        })  # fmt: skip


def _apply(
    settings: Settings, client: redis.Redis, runtime: ModelRuntime, history: pl.DataFrame, summary: SeedSummary,
    batch_size: int, on_progress: Callable[[int, int], None] | None,
) -> None:  # fmt: skip
    topic = settings.seed_topic
    processor = RatingProcessor(
        runtime, RedisFeatureTables(client), topic=topic, min_ts_ms=settings.event_min_ts_ms,
        max_future_ms=settings.event_max_future_ms, half_life_s=settings.trending_half_life_s,
        probe_user_base=settings.probe_user_base, online=OnlineRatingModel(seed=0), ask_challenger=False,
    )  # fmt: skip
    encode = codec_for("RatingEvent").encode
    total = history.height
    stored = client.hget(keys.offsets(topic), "0")
    start = int(stored) + 1 if stored is not None else 0
    summary.skipped = min(start, total)
    if on_progress is not None:
        on_progress(summary.skipped, total)
    users: set[int] = set()
    reasons: Counter[str] = Counter()
    started = time.perf_counter()
    for lo in range(start, total, batch_size):
        rows = history.slice(lo, batch_size).iter_rows()
        msgs = []
        for offset, (uid, mid, r, ts) in enumerate(rows, start=lo):
            ts_ms = int(ts) * 1000
            value = encode(rating_event(uid, mid, r, ts_ms, "replay"))
            msgs.append(Message(topic, 0, offset, value, ts_ms, user_key(uid)))
        plan = processor.run(msgs)  # the worker's path: plan, commit fenced, re-plan if the fence moved
        summary.applied += plan.applied
        summary.skipped += plan.skipped
        summary.dead += len(plan.dead)
        reasons.update(str(d.record["reason"]) for d in plan.dead)
        users.update(plan.users)
        summary.batches += 1
        if on_progress is not None:
            on_progress(min(lo + batch_size, total), total)
    summary.seconds = time.perf_counter() - started
    summary.users = len(users)
    summary.dead_reasons = dict(reasons)
    _mark_done(settings, client, summary, total)


def _mark_done(settings: Settings, client: redis.Redis, summary: SeedSummary, rows: int) -> None:
    client.hset(keys.SEED, mapping={
        "status": DONE, "store_version": summary.store_version, "model_version": summary.model_version,
        "rows": rows, "topic": settings.seed_topic, "finished_ms": int(time.time() * 1000),
    })  # fmt: skip


def marker_summary(marker: dict[str, Any] | None) -> str:
    """One line describing ``rs:seed`` (for ``up``)."""
    if not marker:
        return "not seeded"
    return (f"store v{marker.get('store_version')}, model {marker.get('model_version')}, "
            f"{int(marker.get('rows', 0)):,} rows, {marker.get('status')}")  # fmt: skip
