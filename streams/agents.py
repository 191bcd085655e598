"""The worker's apply step, timer and pages: a batch -> the processor (pure) -> Redis in one atomic step.

Batches come from :class:`streams.consumer.BatchConsumer`, a Faust service that
reads the ratings and movies topics with aiokafka ``getmany`` (why not a Faust
agent per topic: see :mod:`streams.consumer` and :mod:`streams.app`).

Delivery is at-least-once (Tansu has no transactions, INFRA.md); the effect is
exactly-once because each commit stores the highest applied offset per
partition and the processor skips anything at or below it. Dead letters are
sent and acknowledged *before* the batch commits, so a crash can repeat a dead
letter (same key ``topic:partition:offset``) but never lose one.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from functools import cache
from typing import Any

import redis

from models.runtime import ModelRuntime, current_model_dir
from schemas import redis_keys as keys
from streams.app import app, settings, worker_name
from streams.consumer import BatchConsumer
from streams.metrics import CONTENT_TYPE, dead_reasons, metrics
from streams.online import OnlineRatingModel
from streams.processor import DeadLetterOut, Message, MovieProcessor, RatingProcessor
from streams.records import DeadLetterRecord
from streams.store import RedisFeatureStore
from streams.topics import dead_letters_topic

__all__ = ["StreamConsumer", "apply_batch", "heartbeat", "prometheus_metrics"]

#: Produce-to-committed latencies (ms) of the latest applied rating events (``rs:worker:{name}:freshness``).
FRESHNESS_WINDOW = 20_000
_freshness: deque[int] = deque(maxlen=FRESHNESS_WINDOW)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@cache
def _runtime() -> ModelRuntime:
    return ModelRuntime.load(current_model_dir(settings.models_dir))


@cache
def rating_processor() -> RatingProcessor:
    return RatingProcessor(
        _runtime(), RedisFeatureStore(_redis()), topic=settings.topic_ratings,
        min_ts_ms=settings.event_min_ts_ms, max_future_ms=settings.event_max_future_ms,
        half_life_s=settings.trending_half_life_s, online=OnlineRatingModel(seed=0),
    )  # fmt: skip


@cache
def movie_processor() -> MovieProcessor:
    return MovieProcessor(_runtime(), RedisFeatureStore(_redis()), topic=settings.topic_movies)


async def _send_dead(dead: list[DeadLetterOut]) -> None:
    futures = [await dead_letters_topic.send(key=d.key, value=DeadLetterRecord(**d.record)) for d in dead]
    await asyncio.gather(*futures)


async def apply_batch(topic: str, msgs: list[Message]) -> None:
    """Plan, send the dead letters, and commit one batch of ``topic`` (re-planned while the fence fails)."""
    processor: RatingProcessor | MovieProcessor
    processor = rating_processor() if topic == settings.topic_ratings else movie_processor()
    started = time.perf_counter()
    retries = 0
    while True:  # re-plan while the offset fence fails (another worker wrote a partition meanwhile)
        plan = processor.plan(msgs)
        if plan.dead:
            await _send_dead(plan.dead)
        if processor.commit(plan):
            break
        retries += 1
    now_ms = int(time.time() * 1000)
    metrics.observe_batch(
        processor.topic, size=len(msgs), applied=plan.applied, skipped=plan.skipped,
        dead_reasons=dead_reasons(plan.dead), seconds=time.perf_counter() - started, retries=retries,
        age_s=(now_ms - min(m.timestamp_ms for m in msgs)) / 1000.0 if msgs else None,
    )  # fmt: skip
    if isinstance(processor, RatingProcessor):
        _freshness.extend(now_ms - m.timestamp_ms for m in msgs)


@app.service
class StreamConsumer(BatchConsumer):
    """The ratings and movies consumer of this worker, started and stopped with the Faust app."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(settings, apply_batch, **kwargs)


@app.timer(interval=settings.worker_heartbeat_s)
async def heartbeat() -> None:
    """``rs:worker:{name}`` = now (epoch ms), expiring: the gateway's liveness signal."""
    client = _redis()
    client.set(keys.worker(worker_name), int(time.time() * 1000), ex=settings.worker_heartbeat_ttl_s)
    if _freshness:
        window = sorted(_freshness)
        n = len(window)
        client.hset(keys.worker_freshness(worker_name), mapping={
            "n": n, "p50": window[n // 2], "p99": window[min(n - 1, (n * 99) // 100)], "max": window[-1],
        })  # fmt: skip
        client.expire(keys.worker_freshness(worker_name), settings.worker_heartbeat_ttl_s)


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
