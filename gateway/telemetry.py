"""Request accounting: Prometheus metrics (own registry per app) and the numbers /stats reports.

:class:`TelemetryMiddleware` is a plain ASGI middleware (cheaper than Starlette's
``BaseHTTPMiddleware``): it times every request and labels it by route template,
so ``/recommendations/{user_id}`` is one series, not one per user.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

__all__ = ["Telemetry", "TelemetryMiddleware"]

_WINDOW = 4096
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0)
_FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_PARTITION = ["group", "topic", "partition"]
#: Methods labelled by name; any other token a client sends is counted as ``OTHER`` (one series, not one per token).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
#: Every verdict a lag gauge can carry (monitoring.lag_rules.Verdict names).
VERDICTS = ("OK", "WARN", "STALL", "STOP", "REWIND", "RESET")


class Telemetry:
    """Counters and a sliding latency window per route."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = PromCounter(
            "gateway_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "gateway_request_seconds", "Request latency", ["route"], buckets=_BUCKETS, registry=self.registry
        )
        self.recommendations = PromCounter(
            "gateway_recommendations_total", "Recommendation lists served",
            ["variant", "segment", "source", "degraded", "cached"], registry=self.registry,
        )  # fmt: skip
        self.cache_events = PromCounter("gateway_cache_total", "Cache lookups", ["result"], registry=self.registry)
        self.impressions = PromCounter(
            "gateway_impressions_total", "Served lists as ImpressionEvents, by outcome (gateway/impressions.py)",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.ratings = PromCounter("gateway_ratings_total", "POST /ratings", ["result"], registry=self.registry)
        self.model_fallbacks = PromCounter(
            "gateway_model_fallback_total", "Users scored with the serving model: the model their state names is "
            "not loaded here", ["model"], registry=self.registry,
        )  # fmt: skip
        # Consumer lag, from the gateway's background LagMonitor (gateway/monitors.py).
        r = self.registry
        self.lag_messages = Gauge("reelstream_lag_messages", "Log end - committed offset", _PARTITION, registry=r)
        self.lag_seconds = Gauge("reelstream_lag_seconds", "Age of the first unconsumed record", _PARTITION, registry=r)
        self.lag_committed = Gauge("reelstream_lag_committed_offset", "Committed offset", _PARTITION, registry=r)
        self.lag_end = Gauge("reelstream_lag_log_end_offset", "Log-end offset (fetch high watermark)", _PARTITION,
                             registry=r)  # fmt: skip
        self.lag_rate = Gauge(
            "reelstream_lag_consumption_rate", "Messages consumed per second over the window", _PARTITION, registry=r
        )
        self.lag_partition_verdict = Gauge(
            "reelstream_lag_partition_verdict", "1 for the partition's current verdict", [*_PARTITION, "verdict"],
            registry=r,
        )  # fmt: skip
        self.lag_group_verdict = Gauge(
            "reelstream_lag_group_verdict", "1 for the group's current verdict", ["group", "verdict"], registry=r
        )
        self.lag_errors = PromCounter("reelstream_lag_sample_errors", "Lag samples that failed", registry=r)
        # End-to-end freshness probe (monitoring/freshness.py).
        self.freshness = Histogram(
            "reelstream_freshness_seconds", "Marker rating produced -> its effect readable in Redis",
            buckets=_FRESHNESS_BUCKETS, registry=r,
        )  # fmt: skip
        self.probes = PromCounter("reelstream_freshness_probes", "Freshness probes", ["result"], registry=r)
        self._lock = threading.Lock()
        self.counts: Counter[tuple[str, str, int]] = Counter()
        self.by_variant: Counter[str] = Counter()
        self.explored_by_variant: Counter[str] = Counter()  #: lists ranked by an exploration arm
        self.windows: dict[str, deque[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        with self._lock:
            self.counts[(method, route, status)] += 1
            window = self.windows.get(route)
            if window is None:
                window = self.windows[route] = deque(maxlen=_WINDOW)
            window.append(seconds)

    def served(
        self, variant: str, segment: str, source: str, degraded: bool, cached: bool, exploration: str = "none"
    ) -> None:
        """Count one list; ``exploration`` is the arm that ranked it (``"none"``: exploit)."""
        self.recommendations.labels(variant, segment, source, str(degraded).lower(), str(cached).lower()).inc()
        with self._lock:
            self.by_variant[variant] += 1
            if exploration != "none":
                self.explored_by_variant[variant] += 1

    def record_lag(self, sample: Any) -> None:
        """Set the lag gauges from one :class:`monitoring.lag.GroupLag`."""
        group = sample.group
        for p in sample.partitions:
            labels = (group, p.topic, str(p.partition))
            self.lag_messages.labels(*labels).set(p.lag)
            self.lag_seconds.labels(*labels).set(p.lag_seconds)
            self.lag_committed.labels(*labels).set(p.committed)
            self.lag_end.labels(*labels).set(p.end)
            if p.rate is not None:  # unknown from one sample: the gauge keeps no made-up 0
                self.lag_rate.labels(*labels).set(p.rate)
            for v in VERDICTS:
                self.lag_partition_verdict.labels(*labels, v).set(1.0 if p.verdict == v else 0.0)
        for v in VERDICTS:
            self.lag_group_verdict.labels(group, v).set(1.0 if sample.verdict == v else 0.0)

    def percentiles(self) -> dict[str, dict[str, float]]:
        with self._lock:
            snap = {route: np.fromiter(w, dtype=np.float64) for route, w in self.windows.items()}
        out = {}
        for route, arr in snap.items():
            if arr.size:
                p50, p95, p99 = np.percentile(arr, [50, 95, 99]) * 1000.0
                out[route] = {"n": int(arr.size), "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99)}
        return out


class TelemetryMiddleware:
    def __init__(self, app: Any, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "?")
            self.telemetry.observe(method if method in METHODS else "OTHER", name, status, time.perf_counter() - start)
