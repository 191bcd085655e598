"""The gateway's background monitors: consumer lag and the end-to-end freshness probe.

Both run as asyncio tasks for the app's lifetime (started in :func:`gateway.app.create_app`
when the app builds its own collaborators, or when asked with ``monitors=True``):

- :class:`LagSampler` keeps one :class:`monitoring.lag.LagMonitor` alive (its
  window is what the verdicts look at) and samples the worker group every
  ``settings.gateway_lag_interval_s``; ``GET /lag`` returns the latest sample and
  the ``reelstream_lag_*`` gauges follow it. Requests never touch the broker.
- :class:`ProbeRunner` runs :class:`monitoring.freshness.FreshnessProbe` every
  ``settings.probe_interval_s`` and feeds ``reelstream_freshness_seconds``;
  ``GET /freshness`` returns the recent probes and their percentiles.

A failure (broker or Redis away: ``RedisError``, ``KafkaError``, ``OSError``, ``TimeoutError``,
``InfraError``) is recorded, logged once per outage, counted and retried on the next period: the
monitors never stop the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from gateway.telemetry import Telemetry
from monitoring.freshness import FreshnessProbe, ProbeLost, ProbeResult
from monitoring.lag import GroupLag, LagMonitor, recorded_resets
from monitoring.liveness import worker_heartbeats
from reelstream.errors import InfraError
from reelstream.redis_client import PROBE_TIMEOUT_S, async_redis_client
from reelstream.settings import Settings
from schemas import redis_keys

__all__ = ["LagSampler", "ProbeRunner", "worker_freshness"]

#: Probe results kept for ``GET /freshness``.
PROBES_KEPT = 240
#: Seconds to wait before retrying a monitor that could not start (broker or topics missing).
RETRY_S = 2.0
#: What a monitor survives (and retries): the infrastructure being away.
INFRA_ERRORS = (InfraError, KafkaError, RedisError, OSError, TimeoutError)

log = logging.getLogger(__name__)


class LagSampler:
    """The latest lag sample of the worker group (``settings.app_id``)."""

    def __init__(self, settings: Settings, telemetry: Telemetry, window: int = 10) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.window = window
        self.latest: GroupLag | None = None
        self.error: str | None = None
        self.samples = 0

    def _monitor(self) -> LagMonitor:
        s = self.settings
        topics = s.consumed_topics
        return LagMonitor(
            s.kafka_bootstrap, s.app_id, topics, window=self.window, liveness=worker_heartbeats(s.redis_url),
            resets=recorded_resets(s.redis_url, topics),
        )  # fmt: skip

    async def run(self) -> None:
        interval = self.settings.gateway_lag_interval_s
        while True:
            monitor = self._monitor()
            try:
                await monitor.start()
                while True:
                    sample = await monitor.sample()
                    if self.error is not None:
                        log.warning("lag sampling works again")
                    self.latest, self.error = sample, None
                    self.samples += 1
                    self.telemetry.record_lag(sample)
                    await asyncio.sleep(interval)  # the sampling period
            except INFRA_ERRORS as exc:
                if self.error is None:
                    log.warning("lag sampling failed (%s); retrying every %.0f s", exc, RETRY_S)
                self.error = str(exc) or type(exc).__name__
                self.telemetry.lag_errors.inc()
            finally:
                with contextlib.suppress(*INFRA_ERRORS):
                    await monitor.stop()
            await asyncio.sleep(RETRY_S)  # retry period after a failure


class ProbeRunner:
    """Runs freshness probes and keeps the latest results."""

    def __init__(self, settings: Settings, telemetry: Telemetry, movie_ids: Callable[[], Sequence[int]]) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.movie_ids = movie_ids
        self.recent: deque[ProbeResult] = deque(maxlen=PROBES_KEPT)
        self.lost = 0
        self.error: str | None = None

    def record(self, result: ProbeResult) -> None:
        self.recent.append(result)
        self.error = None
        self.telemetry.freshness.observe(result.seconds)
        self.telemetry.probes.labels("ok").inc()

    def record_lost(self, why: str) -> None:
        self.lost += 1
        self.error = why
        self.telemetry.probes.labels("lost").inc()

    def percentiles_ms(self) -> dict[str, float]:
        if not self.recent:
            return {}
        arr = np.fromiter((r.seconds for r in self.recent), dtype=np.float64) * 1000.0
        p50, p95, p99 = np.percentile(arr, [50, 95, 99])
        return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(arr.max())}

    async def run(self) -> None:
        interval = self.settings.probe_interval_s
        while True:
            try:
                async with FreshnessProbe(self.settings, self.movie_ids()) as probe:
                    while True:
                        started = time.monotonic()
                        try:
                            self.record(await probe.once())
                        except ProbeLost as exc:
                            self.record_lost(str(exc))
                        await asyncio.sleep(max(interval - (time.monotonic() - started), 0.0))  # probe period
            except (*INFRA_ERRORS, ValueError) as exc:
                if self.error is None or not self.error.startswith("probe cannot run"):
                    log.warning("freshness probe cannot run (%s: %s); retrying every %.0f s", type(exc).__name__,
                                exc, RETRY_S)  # fmt: skip
                self.error = f"probe cannot run: {type(exc).__name__}: {exc}"
                self.telemetry.probes.labels("error").inc()
            await asyncio.sleep(RETRY_S)  # retry period after a failure


async def worker_freshness(redis_url: str) -> dict[str, dict[str, int]]:
    """Each live worker's produce-to-commit window from Redis (``rs:worker:{name}:freshness``), in ms."""
    client = async_redis_client(redis_url, timeout=PROBE_TIMEOUT_S)
    out: dict[str, dict[str, int]] = {}
    try:
        pattern = redis_keys.worker_freshness("*")
        prefix, suffix = pattern.split("*")
        async for key in client.scan_iter(match=pattern, count=200):
            name = redis_keys.text(key)[len(prefix) : -len(suffix)]
            raw = await client.hgetall(key)
            with contextlib.suppress(ValueError):
                out[name] = {redis_keys.text(k): int(v) for k, v in raw.items()}
    except (RedisError, OSError):
        return {}
    finally:
        await client.aclose()
    return out
