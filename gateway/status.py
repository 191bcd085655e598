"""``GET /health`` and ``GET /stats``: one mixin of :class:`gateway.service.Gateway`."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from gateway.api.models import (
    ComponentHealth,
    Health,
    Stats,
)
from gateway.batching import ScoreBatcher
from gateway.decisions import (
    rule_6_worker_alive,
)
from gateway.errors import StateUnavailable
from gateway.parts import GatewayParts
from monitoring.hit_rate import judge_counts
from reelstream.addresses import broker_answers
from schemas.archive_status import unarchived_tail
from schemas.challenger import decode_challenger

log = logging.getLogger(__name__)


__all__ = ["BROKER_PROBE_TIMEOUT_S", "PROBE_TTL_S", "CachedProbe", "Status"]

#: How long a /health probe of the broker or the worker heartbeats is reused.
PROBE_TTL_S = 1.0
#: The /health broker probe's TCP connect budget: below the probe's TTL, so a dead broker never holds /health.
BROKER_PROBE_TIMEOUT_S = 0.5


class CachedProbe:
    """A value recomputed at most every ``ttl`` seconds."""

    def __init__(self, fn: Callable[[], Any], ttl: float, clock: Callable[[], float]) -> None:
        self.fn, self.ttl, self.clock = fn, ttl, clock
        self.at = -math.inf
        self.value: Any = None
        self.lock = threading.Lock()

    def get(self) -> Any:
        with self.lock:
            if self.clock() - self.at >= self.ttl:
                self.value = self.fn()
                self.at = self.clock()
            return self.value


class Status(GatewayParts):
    """Component health and request statistics (a mixin of ``Gateway``)."""

    batcher: ScoreBatcher
    wall_ms: Callable[[], int]
    _broker: CachedProbe
    _workers: CachedProbe

    def _probe_broker(self) -> ComponentHealth:
        ok = broker_answers(self.settings.kafka_bootstrap, timeout=BROKER_PROBE_TIMEOUT_S)
        return ComponentHealth(ok=ok, detail=f"{self.settings.kafka_bootstrap} {'answers' if ok else 'unreachable'}")

    def _probe_workers(self) -> ComponentHealth:
        try:
            beats = self.state.workers()
        except StateUnavailable:
            return ComponentHealth(ok=False, detail="unknown: Redis unreachable")
        now = self.wall_ms()
        stale = self.settings.gateway_worker_stale_ms
        alive = sorted(n for n, ms in beats.items() if rule_6_worker_alive(ms, now, stale))
        if not alive:
            return ComponentHealth(ok=False, detail="no worker heartbeat")
        return ComponentHealth(ok=True, detail="alive: " + ", ".join(alive))

    def health(self) -> Health:
        try:
            self.state.ping()
            redis_h = ComponentHealth(ok=True, detail="answers PING")
        except StateUnavailable as exc:
            redis_h = ComponentHealth(ok=False, detail=str(exc))
        cat = self.catalog
        model_h = ComponentHealth(ok=True, detail=f"{cat.model_version}: {cat.n} items, latent {cat.latent}")
        rules = self.rules.current()
        err = self.rules.last_error
        rules_h = ComponentHealth(ok=err is None, detail=err or f"{rules.doc.name} {rules.version}")
        broker_h, worker_h = self._broker.get(), self._workers.get()
        parts = (broker_h, redis_h, model_h, worker_h, rules_h)
        lost = resets = tail = challenger = hit_rate = None
        if redis_h.ok:
            try:
                counters = self.state.stats()
                lost, resets = (int(float(counters.get(k, 0))) for k in ("events_lost", "log_resets"))
                archive = self.state.archive_status()
                tail = unarchived_tail(archive) if archive else None
                challenger = decode_challenger(self.state.challenger()).as_dict()
                hit_rate = self._hit_rate()
            except (StateUnavailable, ValueError):
                pass
        return Health(
            status="ok" if all(p.ok for p in parts) else "degraded",
            broker=broker_h, redis=redis_h, model=model_h, worker=worker_h, rules=rules_h,
            events_lost=lost, log_resets=resets, unarchived=tail, challenger=challenger, hit_rate=hit_rate,
        )  # fmt: skip

    def _hit_rate(self) -> dict[str, Any]:
        """The live hit-rate watch's verdict (monitoring/hit_rate.py), read only: ``reelstream retrain`` asks."""
        event_ms = self.state.item_prior_clock().get("event_ms")
        return judge_counts(self.state.experiment_days(), event_ms, self.settings, self.wall_ms()).as_dict()

    def stats(self) -> Stats:
        t = self.telemetry
        with t._lock:
            counts = [{"method": m, "route": r, "status": s, "count": c} for (m, r, s), c in sorted(t.counts.items())]
            by_variant = dict(t.by_variant)
            explored = dict(t.explored_by_variant)
        try:
            worker_stats = self.state.stats()
        except StateUnavailable:
            worker_stats = {}
        try:
            applied = int(float(worker_stats["events_applied"])) if "events_applied" in worker_stats else None
        except ValueError:
            applied = None
        c, b = self.cache, self.batcher
        return Stats(
            requests=counts, latency_ms=t.percentiles(),
            cache={"hits": c.hits, "misses": c.misses, "hit_rate": c.hit_rate, "size": len(c)},
            scoring={"batches": b.batches, "scored": b.batched, "mean_batch": b.batched / max(b.batches, 1)},
            recommendations_by_variant=by_variant, explored_by_variant=explored, events_applied=applied,
            worker_stats=worker_stats,
            impressions=None if self.impressions is None else self.impressions.snapshot(),
            item_prior={"source": self.prior.source, "events": self.prior.events},
        )  # fmt: skip
