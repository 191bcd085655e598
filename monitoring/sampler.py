"""One call a benchmark or script makes every few seconds during a run: consumer lag, freshness, throughput.

``reelstream lag`` and the gateway's ``/lag`` and ``/freshness`` show one of these at a time; a run at scale
(``reelstream up --data DIR --rate 0``) wants them together, as numbers, from a plain synchronous loop::

    with RunSampler(settings) as sampler:
        while running:
            print(sampler.sample().as_dict())
            time.sleep(5)

:class:`RunSampler` keeps one :class:`~monitoring.lag.LagMonitor` (and its event loop) for the whole run, so the
lag verdict has its window, and reads the workers' freshness windows (``rs:worker:{name}:freshness``) and the
applied-event counter (``rs:stats``) from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from monitoring.lag import LagMonitor
from monitoring.liveness import worker_heartbeats
from reelstream.redis_client import redis_client
from reelstream.settings import Settings
from schemas import redis_keys

__all__ = ["RunSample", "RunSampler"]


@dataclass(frozen=True)
class RunSample:
    """The system at one instant (``at``, epoch seconds)."""

    at: float
    lag: int  #: records of the ratings and movies topics the worker group has not committed
    lag_seconds: float  #: the largest per-partition lag in event-produce time
    verdict: str  #: the group's Burrow-style verdict over the sampler's window
    events_applied: int  #: ``rs:stats`` ``events_applied`` (every worker, since the last rebuild)
    applied_per_s: float | None  #: events applied per second since the previous sample (None: first sample)
    #: worker name -> its latest produce-to-commit window in ms (``n``, ``p50``, ``p99``, ``max``)
    freshness_ms: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunSampler:
    """Samples lag, freshness and throughput on demand; use as a context manager (it holds broker connections)."""

    def __init__(self, settings: Settings, window: int = 10) -> None:
        self.settings = settings
        topics = settings.consumed_topics
        self._monitor = LagMonitor(settings.kafka_bootstrap, settings.app_id, topics, window=window,
                                   liveness=worker_heartbeats(settings.redis_url))  # fmt: skip
        self._runner: asyncio.Runner | None = None
        self._last: tuple[float, int] | None = None

    def __enter__(self) -> RunSampler:
        self._runner = asyncio.Runner()
        self._runner.run(self._monitor.start())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                self._runner.run(self._monitor.stop())
            self._runner.close()
            self._runner = None

    def sample(self) -> RunSample:
        """One sample; raises InfraError when the broker does not answer, RedisError when Redis does not."""
        if self._runner is None:
            raise RuntimeError("RunSampler.sample() outside its `with` block")
        lag = self._runner.run(self._monitor.sample())
        applied, freshness = self._redis_side()
        now = time.time()
        rate = None
        if self._last is not None and now > self._last[0]:
            rate = (applied - self._last[1]) / (now - self._last[0])
        self._last = (now, applied)
        return RunSample(
            at=now, lag=lag.total_lag, lag_seconds=max((p.lag_seconds for p in lag.partitions), default=0.0),
            verdict=lag.verdict, events_applied=applied, applied_per_s=rate, freshness_ms=freshness,
        )  # fmt: skip

    def _redis_side(self) -> tuple[int, dict[str, dict[str, int]]]:
        client = redis_client(self.settings.redis_url)
        try:
            applied = int(client.hget(redis_keys.STATS, "events_applied") or 0)
            pattern = redis_keys.worker_freshness("*")
            prefix, suffix = pattern.split("*")
            freshness = {}
            for key in client.scan_iter(match=pattern, count=200):
                name = key.decode()[len(prefix) : -len(suffix)]
                with contextlib.suppress(ValueError):
                    freshness[name] = {str(k, 'utf-8') if isinstance(k, bytes) else k: int(v)
                                       for k, v in client.hgetall(key).items()}  # fmt: skip
            return applied, freshness
        finally:
            client.close()
