"""The worker's apply step, timer and pages: a batch -> the processor -> Redis in one atomic step.

Batches come from :class:`streams.consumer.BatchConsumer`, a Faust service that
reads the ratings and movies topics with aiokafka ``getmany`` (why not a Faust
agent per topic: see :mod:`streams.consumer` and :mod:`streams.app`).

Delivery is at-least-once (Tansu has no transactions, docs/infra.md); the effect is
exactly-once because each commit stores the highest applied offset per
partition, with the identity of its log (:mod:`streams.log_identity`), and the
processor skips anything at or below it. Dead letters are sent and acknowledged
*before* the batch commits, so a crash can repeat a dead letter (same key
``topic:partition:offset``) but never lose one.

**Nothing blocks the event loop, nothing ends the process.** The processor's Redis calls are sync
(redis-py pipelines and Lua scripts are ~3x cheaper than redis.asyncio here, docs/infra.md), so plan and
commit run in a dedicated thread (one hop per batch). A poll larger than ``stream_batch_max`` commits in
parts, each rating part's commit in a second thread while the first plans the next part over it
(:meth:`streams.processor.RatingProcessor.plan` ``after``): the worker's CPU and Redis's then overlap.
The heartbeat, the Redis ping and the pages use redis.asyncio. Every client comes from
:mod:`reelstream.redis_client` (with ``redis_timeout_s``).
The heartbeat timer doubles as the outage watch: a Redis or broker error there is logged once per
outage and counted (:class:`streams.consumer.Outages`), the consumer pauses and recovers, and
``GET /health`` on the worker's web port answers 503 with what is down and since when.

**The rebuild hook.** Before consuming starts and after every Redis outage the consumer calls
``streams.rebuild.rebuild_if_needed(settings, client)`` in a thread (when that module exists): it
rebuilds Redis from HISTORY and the archive when the ``rs:seed`` marker is missing or stale; then every
owned partition is sought to its fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from models.registry import ModelSet
from models.runtime import ModelRuntime, current_model_dir
from reelstream.addresses import broker_answers
from reelstream.errors import ReelstreamError
from reelstream.redis_client import async_redis_client, redis_client
from schemas import redis_keys as keys
from streams import heap
from streams.app import app, settings, worker_name
from streams.consumer import INFRA_ERRORS, BatchConsumer, Outages
from streams.log_identity import Fence, LogView
from streams.metrics import CONTENT_TYPE, dead_reasons, metrics
from streams.online import OnlineRatingModel
from streams.processor import (
    BatchPlan,
    DeadLetterOut,
    ImpressionProcessor,
    Message,
    MovieProcessor,
    Processor,
    RatingProcessor,
    commit_plan,
    merge_plans,
)
from streams.records import DeadLetterRecord
from streams.store import RedisFeatureTables
from streams.topics import dead_letters_topic

__all__ = ["StreamConsumer", "apply_batch", "health", "heartbeat", "outages", "prometheus_metrics"]

log = logging.getLogger(__name__)

#: Produce-to-committed latencies (ms) of the latest applied rating events (``rs:worker:{name}:freshness``).
FRESHNESS_WINDOW = 20_000
_freshness: deque[int] = deque(maxlen=FRESHNESS_WINDOW)
#: Longest wait for the broker to acknowledge a batch's dead letters (then: a broker outage, retried).
DEAD_LETTER_TIMEOUT_S = 15.0
#: The heartbeat's broker check (an ApiVersions round trip) gives up after this many seconds.
BROKER_PROBE_TIMEOUT_S = 2.0
#: What is down in this worker, since when (``GET /health``).
outages = Outages()
_consumers: list[BatchConsumer] = []


@cache
def _redis() -> redis.Redis:
    return redis_client(settings.redis_url)


@cache
def _aredis() -> aioredis.Redis:
    return async_redis_client(settings.redis_url)


@cache
def _runtime() -> ModelRuntime:
    return ModelRuntime.load(current_model_dir(settings.models_dir), scoring=False)  # the worker only folds in


@cache
def _models() -> ModelSet:
    """Every model users' states name (a hot swap leaves two for a while), loaded from var/models on first use."""
    return ModelSet(settings.models_dir, _runtime(), scoring=False)


@cache
def rating_processor() -> RatingProcessor:
    return RatingProcessor(
        _runtime(), RedisFeatureTables(_redis()), topic=settings.topic_ratings,
        min_ts_ms=settings.event_min_ts_ms, max_future_ms=settings.event_max_future_ms,
        half_life_s=settings.trending_half_life_s, probe_user_base=settings.probe_user_base,
        online=_online_model(), models=_models(), attribution_window_s=settings.attribution_window_s,
    )  # fmt: skip


def _checkpoint_path() -> Path:
    return settings.online_dir / f"{worker_name}.pkl"


def _online_model() -> OnlineRatingModel:
    """This worker's online model, resumed from its checkpoint when there is one (streams/online.py).

    A checkpoint that does not load is logged, renamed ``*.bad`` (kept for a look) and the model starts cold:
    it is a monitor, not state the recommendations depend on.
    """
    path = _checkpoint_path()
    if settings.online_checkpoint_s and path.exists():
        try:
            model = OnlineRatingModel.load(path)
        except (ValueError, OSError) as exc:
            log.error("online model checkpoint not resumed, starting cold: %s", exc)
            with contextlib.suppress(OSError):
                path.replace(path.with_suffix(".bad"))
        else:
            log.info("online model resumed from %s: %d events learned, %d drift alarms", path, model.n, model.drifts)
            return model
    return OnlineRatingModel(seed=0)


_checkpointed_at = time.monotonic()


def _checkpoint_due() -> bool:
    every = settings.online_checkpoint_s
    return bool(every) and time.monotonic() - _checkpointed_at >= every


def _checkpoint() -> None:
    """Save the online model (in the apply thread, between batches: nothing learns while it is written)."""
    global _checkpointed_at
    if not settings.online_checkpoint_s or not rating_processor.cache_info().currsize:
        return  # off, or this worker never built its model (nothing learned)
    _checkpointed_at = time.monotonic()
    try:
        rating_processor().online.save(_checkpoint_path())
    except OSError as exc:  # a full or read-only disk must not stop the stream
        log.error("online model checkpoint %s not written: %s", _checkpoint_path(), exc)


@cache
def movie_processor() -> MovieProcessor:
    return MovieProcessor(_runtime(), RedisFeatureTables(_redis()), topic=settings.topic_movies)


@cache
def impression_processor() -> ImpressionProcessor:
    return ImpressionProcessor(RedisFeatureTables(_redis()), topic=settings.topic_impressions,
                               window_s=settings.attribution_window_s)  # fmt: skip


def _processor(topic: str) -> Processor:
    if topic == settings.topic_ratings:
        return rating_processor()
    return impression_processor() if topic == settings.topic_impressions else movie_processor()


async def _send_dead(dead: list[DeadLetterOut]) -> None:
    async def send() -> None:
        futures = [await dead_letters_topic.send(key=d.key, value=DeadLetterRecord(**d.record)) for d in dead]
        await asyncio.gather(*futures)

    await asyncio.wait_for(send(), DEAD_LETTER_TIMEOUT_S)  # TimeoutError: the broker is away, retried


#: The one thread plans (and serial commits) run in (one batch planned at a time; a warm thread).
_APPLY_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apply")
#: Where a rating batch's commit waits on Redis while the apply thread plans the next one.
_COMMIT_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")


def _plan_and_commit(
    processor: Processor, msgs: list[Message], logs: dict[int, LogView] | None
) -> tuple[BatchPlan, bool | None]:
    """Plan, then commit at once unless the plan has dead letters (they go out first: None, not committed)."""
    plan = processor.plan(msgs, logs)
    if plan.dead:
        return plan, None
    return plan, processor.commit(plan)


async def _apply_one(
    processor: Processor, msgs: list[Message], logs: dict[int, LogView] | None
) -> tuple[BatchPlan, int]:
    """Plan, send the dead letters, commit; re-planned while the fence fails. (plan, retries)"""
    loop = asyncio.get_running_loop()
    retries = 0
    while True:  # re-plan while the offset fence fails (another worker wrote a partition meanwhile)
        plan, committed = await loop.run_in_executor(_APPLY_THREAD, _plan_and_commit, processor, msgs, logs)
        if committed is None:
            await _send_dead(plan.dead)
            committed = await loop.run_in_executor(_APPLY_THREAD, processor.commit, plan)
        if committed:
            return plan, retries
        retries += 1


def _views_of(logs: dict[int, LogView] | None, part: list[Message]) -> dict[int, LogView]:
    """The views of the partitions ``part`` holds records of (only a poll's first part checks the others)."""
    held = {m.partition for m in part}
    return {p: v for p, v in (logs or {}).items() if p in held}


async def _apply_parts(
    processor: Processor, msgs: list[Message], logs: dict[int, LogView] | None, size: int
) -> tuple[BatchPlan, int]:
    """One poll in commits of at most ``size`` messages; a rating part is planned while the one before it
    commits (:meth:`RatingProcessor.plan` ``after``), so the worker and Redis work at once.

    A part that is not plain (dead letters, a reset log, a seek) or whose commit is refused ends the
    overlap: from there on, the rest of the poll is applied as one batch, as a poll of the rest alone would be.
    """
    loop = asyncio.get_running_loop()
    parts = [msgs[i : i + size] for i in range(0, len(msgs), size)] or [[]]
    pipelined = isinstance(processor, RatingProcessor)
    done: list[BatchPlan] = []
    flight: tuple[int, BatchPlan, asyncio.Future[bool]] | None = None

    async def rest_from(k: int, refused: bool) -> tuple[BatchPlan, int]:
        rest = [m for part in parts[k:] for m in part]
        plan, retries = await _apply_one(processor, rest, logs if k == 0 else _views_of(logs, rest))
        return merge_plans(processor.topic, [*done, plan]), retries + refused

    for k, part in enumerate(parts):
        views = logs if k == 0 else _views_of(logs, part)
        after = flight[1] if flight is not None else None
        try:
            if isinstance(processor, RatingProcessor):
                plan = await loop.run_in_executor(_APPLY_THREAD, processor.plan, part, views, after)
            else:
                plan = await loop.run_in_executor(_APPLY_THREAD, processor.plan, part, views)
        except BaseException:
            if flight is not None:  # the commit ends before the consumer recovers from the fences
                with contextlib.suppress(Exception):
                    await flight[2]
            raise
        if flight is not None:
            j, prev, fut = flight
            flight = None
            if not await fut:
                return await rest_from(j, True)  # refused: this part was planned over it, plan both again
            assert isinstance(processor, RatingProcessor)
            processor.confirm(prev)
            done.append(prev)
        if not plan.plain:
            return await rest_from(k, False)
        if pipelined:
            flight = (k, plan, loop.run_in_executor(_COMMIT_THREAD, commit_plan, processor.store, plan))
        elif await loop.run_in_executor(_APPLY_THREAD, processor.commit, plan):
            done.append(plan)
        else:
            return await rest_from(k, True)
    if flight is not None:
        j, prev, fut = flight
        if not await fut:
            return await rest_from(j, True)
        assert isinstance(processor, RatingProcessor)
        processor.confirm(prev)
        done.append(prev)
    return (done[0] if len(done) == 1 else merge_plans(processor.topic, done)), 0


async def apply_batch(topic: str, msgs: list[Message], logs: dict[int, LogView] | None = None) -> BatchPlan:
    """Plan, send the dead letters, and commit one poll of ``topic`` (re-planned while the fence fails).

    Plan and commit run in threads: their Redis calls are sync and must not block the event loop. A poll of
    more than ``stream_batch_max`` messages commits in parts of that size (:func:`_apply_parts`); a batch
    with dead letters comes back to send them (acknowledged) before its commit.
    """
    processor = _processor(topic)
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    if len(msgs) <= settings.stream_batch_max:
        plan, retries = await _apply_one(processor, msgs, logs)
    else:
        plan, retries = await _apply_parts(processor, msgs, logs, settings.stream_batch_max)
    now_ms = int(time.time() * 1000)
    metrics.observe_batch(
        processor.topic, size=len(msgs), applied=plan.applied, skipped=plan.skipped,
        dead_reasons=dead_reasons(plan.dead), seconds=time.perf_counter() - started, retries=retries,
        age_s=(now_ms - min(m.timestamp_ms for m in msgs)) / 1000.0 if msgs else None,
    )  # fmt: skip
    if isinstance(processor, RatingProcessor):
        _freshness.extend(now_ms - m.timestamp_ms for m in msgs)
        if _checkpoint_due():
            await loop.run_in_executor(_APPLY_THREAD, _checkpoint)
    return plan


async def _read_fences(topic: str) -> dict[int, Fence]:
    return await asyncio.get_running_loop().run_in_executor(_APPLY_THREAD, _processor(topic).store.read_fences, topic)


async def _ping_redis() -> None:
    await _aredis().ping()


async def _ping_broker() -> None:
    if not await asyncio.to_thread(broker_answers, settings.kafka_bootstrap, BROKER_PROBE_TIMEOUT_S):
        raise ConnectionError(f"no broker answers at {settings.kafka_bootstrap}")


@cache
def _rebuild_hook() -> Callable[[Any, redis.Redis], Any] | None:
    """``streams.rebuild.rebuild_if_needed`` (written separately; None until that module exists)."""
    try:
        module = importlib.import_module("streams.rebuild")
    except ModuleNotFoundError as exc:
        if exc.name != "streams.rebuild":
            raise
        log.info("streams.rebuild is not installed: no automatic Redis rebuild")
        return None
    return module.rebuild_if_needed


async def _recover() -> None:
    """The rebuild hook, in a thread (it reads the store and writes Redis with the sync client).

    Infrastructure errors propagate (the consumer retries); a store or model that cannot be read is logged
    and the worker goes on with Redis as it is (nothing to rebuild from is not a reason to stop consuming).
    """
    hook = _rebuild_hook() if settings.worker_rebuild else None
    if hook is None:
        return
    try:
        summary = await asyncio.to_thread(hook, settings, _redis())
    except INFRA_ERRORS:
        raise
    except ReelstreamError as exc:
        log.error("Redis rebuild skipped: %s", exc)
        return
    if summary is not None:
        log.warning("Redis state rebuilt: %s", summary)


@app.service
class StreamConsumer(BatchConsumer):
    """The ratings and movies consumer of this worker, started and stopped with the Faust app."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            settings, apply_batch, fences=_read_fences, ping_redis=_ping_redis, ping_broker=_ping_broker,
            recover=_recover, outages=outages, **kwargs,
        )  # fmt: skip
        _consumers.append(self)

    async def on_stop(self) -> None:
        await super().on_stop()
        await asyncio.get_running_loop().run_in_executor(_APPLY_THREAD, _checkpoint)


def _request_recovery() -> None:
    for consumer in _consumers:
        consumer.request_recovery()


async def _beat() -> bool:
    """Write the heartbeat (and freshness window); True while the ``rs:seed`` marker exists."""
    pipe = _aredis().pipeline(transaction=False)
    pipe.exists(keys.SEED)
    pipe.set(keys.worker(worker_name), int(time.time() * 1000), ex=settings.worker_heartbeat_ttl_s)
    if _freshness:
        window = sorted(_freshness)
        n = len(window)
        pipe.hset(keys.worker_freshness(worker_name), mapping={
            "n": n, "p50": window[n // 2], "p99": window[min(n - 1, (n * 99) // 100)], "max": window[-1],
        })  # fmt: skip
        pipe.expire(keys.worker_freshness(worker_name), settings.worker_heartbeat_ttl_s)
    return bool((await pipe.execute())[0])


_seed_seen = False  #: the rs:seed marker existed at an earlier beat
#: Seconds between two trims of the C heap (a trim of the worker's heap takes about a millisecond).
HEAP_TRIM_EVERY_S = 10.0
_trimmed_at = 0.0


@app.timer(interval=settings.worker_heartbeat_s)
async def heartbeat() -> None:
    """``rs:worker:{name}`` = now (epoch ms), expiring: the gateway's liveness signal; and the outage watch.

    Never raises on an infrastructure error (a raising Faust timer ends the app): it records the outage,
    and the consumer pauses; when Redis answers again the consumer recovers (rebuild hook, fences). A
    ``rs:seed`` marker that disappeared (Redis flushed under the worker, no outage seen) asks for the same.
    """
    global _seed_seen, _trimmed_at
    if time.monotonic() - _trimmed_at >= HEAP_TRIM_EVERY_S:  # freed C heap back to the system (streams/heap.py)
        _trimmed_at = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, heap.trim)
    try:
        seeded = await _beat()
    except INFRA_ERRORS as exc:
        if outages.fail("redis", exc):
            _request_recovery()
    else:
        if outages.ok("redis"):
            _request_recovery()  # Redis came back: AOF may have lost its last second; follow the fences
        elif _seed_seen and not seeded and settings.worker_rebuild:
            log.warning("the rs:seed marker is gone (Redis flushed?): rebuilding, then following the fences")
            _request_recovery()
        _seed_seen = seeded
    try:
        await _ping_broker()
    except INFRA_ERRORS as exc:
        if outages.fail("broker", exc):
            _request_recovery()
    else:
        if outages.ok("broker"):
            _request_recovery()


@app.task
async def warm_up() -> None:
    """Load the model and connect to Redis at start, not on the first event."""
    rating_processor()
    movie_processor()
    # Everything allocated so far (Faust, aiohttp, the model, the catalogue index) lives as long as
    # the process: freezing it keeps the collector's full passes short. Unfrozen, a gen-2 pass over
    # it stalled the event loop for 0.2-1.4 s on this machine, which set the p99 freshness.
    gc.collect()
    gc.freeze()
    await heartbeat()


@app.page("/health")
async def health(web: Any, request: Any) -> Any:
    """This worker's state: 200 ``ok``, or 503 ``degraded`` with what is down, since when and why."""
    body = {**outages.as_dict(), "worker": worker_name,
            "recovering": any(c.recovery_needed for c in _consumers)}  # fmt: skip
    return web.json(body, status=503 if outages.degraded else 200)


@app.page("/online")
async def online_metrics(web: Any, request: Any) -> Any:
    """The online model's running metrics (the same numbers as ``rs:online``, this process only)."""
    m = rating_processor().online
    n = max(m.n, 1)
    return web.json({"model": repr(m), "n": m.n, "mae": m.abs_sum / n, "rmse": (m.sq_sum / n) ** 0.5,
                     "drifts": m.drifts, "worker": worker_name})  # fmt: skip


@app.page("/metrics")
async def prometheus_metrics(web: Any, request: Any) -> Any:
    """This worker's Prometheus series (:mod:`streams.metrics`)."""
    return web.bytes(metrics.exposition(), content_type=CONTENT_TYPE)
