"""The worker's Prometheus metrics, served by its own web server at ``GET /metrics``.

Each worker process has its own registry (scrape every worker; sum in PromQL).
The apply step (:mod:`streams.apply`) calls :func:`observe_batch` once per applied batch, after its atomic
Redis commit, so the series count what reached Redis, including redeliveries
skipped by the offset fence:

=============================================  =========  ======================================
series                                         type       labels
=============================================  =========  ======================================
``reelstream_worker_events_applied_total``     counter    ``topic``
``reelstream_worker_dead_letters_total``       counter    ``topic``, ``reason`` (streams/rules.py)
``reelstream_worker_duplicates_skipped_total`` counter    ``topic``
``reelstream_worker_fence_retries_total``      counter    ``topic`` (re-plans after a rebalance)
``reelstream_worker_batch_size``               histogram  ``topic`` (messages per batch)
``reelstream_worker_apply_seconds``            histogram  ``topic`` (plan + dead letters + commit)
``reelstream_worker_batch_age_seconds``        histogram  ``topic`` (oldest event's produce time to
                                                          commit: the batch's worst freshness)
``reelstream_worker_log_resets_total``         counter    ``topic`` (a partition's log was replaced:
                                                          streams/log_identity.py; fence re-based)
``reelstream_worker_events_lost_total``        counter    ``topic`` (estimated records of reset logs
                                                          never applied)
``reelstream_worker_outages_total``            counter    ``service`` (redis, broker: outages begun)
``reelstream_worker_degraded``                 gauge      ``service`` (1 while it is down)
``reelstream_worker_fence_seeks_total``        counter    ``reason`` (fence: assignment, recovery or
                                                          verification; gap; rewind after a reset)
=============================================  =========  ======================================

``rs:stats`` in Redis keeps the group-wide totals (events_applied, dead_letters,
duplicates_skipped, log_resets, events_lost); these series add the per-reason split, batch shapes and
latencies, per process.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE", "SERIES", "WorkerMetrics", "dead_reasons", "metrics"]

#: Prometheus text format 0.0.4, without the charset parameter (aiohttp refuses one in content_type).
CONTENT_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4"
_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_AGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: Every series name this module exports (tests and the Grafana dashboard refer to these).
SERIES = (
    "reelstream_worker_events_applied_total",
    "reelstream_worker_dead_letters_total",
    "reelstream_worker_duplicates_skipped_total",
    "reelstream_worker_fence_retries_total",
    "reelstream_worker_batch_size",
    "reelstream_worker_apply_seconds",
    "reelstream_worker_batch_age_seconds",
    "reelstream_worker_log_resets_total",
    "reelstream_worker_events_lost_total",
    "reelstream_worker_outages_total",
    "reelstream_worker_degraded",
    "reelstream_worker_fence_seeks_total",
)


class WorkerMetrics:
    """One registry with the worker's series (module-level :data:`metrics` in a worker process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.applied = Counter("reelstream_worker_events_applied", "Events applied to Redis", ["topic"], registry=r)
        self.dead = Counter(
            "reelstream_worker_dead_letters", "Events dead-lettered, by reason", ["topic", "reason"], registry=r
        )
        self.skipped = Counter(
            "reelstream_worker_duplicates_skipped", "Redelivered events skipped by the offset fence", ["topic"],
            registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "reelstream_worker_fence_retries", "Batches re-planned because the offset fence moved", ["topic"],
            registry=r,
        )  # fmt: skip
        self.batch = Histogram(
            "reelstream_worker_batch_size", "Messages per batch", ["topic"], buckets=_SIZE_BUCKETS, registry=r
        )
        self.apply = Histogram(
            "reelstream_worker_apply_seconds", "Seconds to plan, dead-letter and commit one batch", ["topic"],
            buckets=_SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.age = Histogram(
            "reelstream_worker_batch_age_seconds", "Produce time to Redis commit, per applied event", ["topic"],
            buckets=_AGE_BUCKETS, registry=r,
        )  # fmt: skip
        self.resets = Counter(
            "reelstream_worker_log_resets", "Partition logs found replaced (fence re-based)", ["topic"], registry=r
        )
        self.lost = Counter(
            "reelstream_worker_events_lost", "Estimated records of reset logs never applied", ["topic"], registry=r
        )
        self.outages = Counter("reelstream_worker_outages", "Outages begun, by service", ["service"], registry=r)
        self.degraded = Gauge("reelstream_worker_degraded", "1 while the service is down", ["service"], registry=r)
        self.seeks = Counter(
            "reelstream_worker_fence_seeks", "Positions moved to follow the Redis fence", ["reason"], registry=r
        )

    def log_reset(self, topic: str, lost: int) -> None:
        """One partition's log reset was committed (its fence re-based)."""
        self.resets.labels(topic).inc()
        if lost:
            self.lost.labels(topic).inc(lost)

    def outage(self, service: str, *, down: bool) -> None:
        """``service`` went down (counted) or came back."""
        if down:
            self.outages.labels(service).inc()
        self.degraded.labels(service).set(1 if down else 0)

    def fence_seek(self, reason: str) -> None:
        self.seeks.labels(reason).inc()

    def observe_batch(
        self,
        topic: str,
        *,
        size: int,
        applied: int,
        skipped: int,
        dead_reasons: Iterable[str],
        seconds: float,
        retries: int = 0,
        age_s: float | None = None,
    ) -> None:
        """Record one committed batch."""
        self.batch.labels(topic).observe(size)
        self.apply.labels(topic).observe(seconds)
        if applied:
            self.applied.labels(topic).inc(applied)
        if skipped:
            self.skipped.labels(topic).inc(skipped)
        if retries:
            self.retries.labels(topic).inc(retries)
        for reason, n in Tally(dead_reasons).items():
            self.dead.labels(topic, reason).inc(n)
        if age_s is not None:
            self.age.labels(topic).observe(max(age_s, 0.0))

    def exposition(self) -> bytes:
        """The Prometheus text format of every series."""
        return generate_latest(self.registry)


metrics = WorkerMetrics()


def dead_reasons(records: Iterable[Any]) -> list[str]:
    """The ``reason`` of each planned dead letter (:class:`streams.processor.DeadLetterOut`)."""
    return [d.record["reason"] for d in records]
