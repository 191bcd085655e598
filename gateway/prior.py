"""The model's streaming item prior at serving time: one float per catalogue item, refreshed in the background.

The hybrid VAE was evaluated with ``logits = item_decoder @ mu + item_bias + beta * log(1 + c_i(now))``
(``models/runtime.py``, docs/evaluation.md), where ``c_i`` is movie ``i``'s event count decayed with the
model's ``item_prior.half_life_s``. The worker keeps exactly that count in ``rs:items:prior`` and its
clock (the latest event time it applied) in ``rs:items:prior:clock`` (``streams/processor.py``).
:class:`ItemPrior` turns them into the per-item term with
:meth:`~models.runtime.ModelRuntime.prior_logits`:

* ``now`` is ``rs:items:prior:clock`` ``event_ms`` / 1000: event time, not the gateway's wall clock,
  so the same Redis contents always give the same vector (and the same lists);
* while the zset is missing or empty (a fresh Redis, a worker that has not applied anything yet), the
  model's own HISTORY-primed counts (``item_prior.npz``) and their clock are used, so a fresh system
  still serves the evaluated model;
* a model without a prior (no ``item_prior`` metadata, or beta 0) gives no vector at all.

The term is item-level and user-independent, so refreshing it every ``gateway_prior_refresh_s`` seconds
is not response caching; but a response does depend on it, so :attr:`ItemPrior.generation` (bumped
whenever the vector changes) is part of every recommendation cache key (``gateway/recommender.py``).
Catalogue rows the zset has no count for (side-feature-only movies, movies added after the last
refresh) get ``beta * log(1 + 0) = 0``, the value of a movie without events.
"""

from __future__ import annotations

import threading

import numpy as np

from gateway.catalog import Catalog
from gateway.state import StateReader
from models.runtime import ModelRuntime
from reelstream.errors import ModelError

__all__ = ["ItemPrior"]


class ItemPrior:
    """The current prior vector (float32 over catalogue indices) and its generation."""

    def __init__(self, runtime: ModelRuntime | None) -> None:
        self.runtime = runtime if runtime is not None and runtime.has_item_prior else None
        self.source = "none"  #: "none" (no prior), "primed" (item_prior.npz) or "redis" (rs:items:prior)
        self.now_s: float | None = None  #: the clock of the current vector (event seconds)
        #: the events the current vector counts (``rs:items:prior:clock`` ``events``; 0: primed or none)
        self.events = 0
        self.last_error: str | None = None
        self._current: tuple[int, np.ndarray | None] = (0, None)  # one attribute: readers see a consistent pair
        self._seen: tuple[str | None, ...] | None = None  # the clock fields (and catalogue size) last read
        self._lock = threading.Lock()
        self._primed: np.ndarray | None = None
        if self.runtime is not None and self.runtime.primed_prior is not None:
            trending, now = self.runtime.primed_prior
            self._primed = self.runtime.prior_logits(trending, now)
            self._publish(self._primed, "primed", now)

    @property
    def active(self) -> bool:
        return self.runtime is not None

    @property
    def generation(self) -> int:
        """Bumped whenever the vector changes (part of the recommendation cache key)."""
        return self._current[0]

    def current(self, n: int) -> tuple[int, np.ndarray | None]:
        """``(generation, vector over n catalogue items or None)``; rows past the vector's end get 0."""
        gen, vec = self._current
        if vec is not None and vec.shape[0] < n:
            vec = np.concatenate([vec, np.zeros(n - vec.shape[0], dtype=np.float32)])
        return gen, vec

    def _publish(self, vec: np.ndarray | None, source: str, now_s: float | None) -> bool:
        gen, old = self._current
        self.source, self.now_s = source, now_s
        if old is not None and vec is not None and old.shape == vec.shape and np.array_equal(old, vec):
            return False
        if old is None and vec is None:
            return False
        self._current = (gen + 1, vec)
        return True

    def _fallback(self) -> bool:
        """Serve the model's HISTORY-primed counts (or nothing, when the model has none)."""
        primed = self.runtime.primed_prior if self.runtime is not None else None
        if primed is None:
            return self._publish(None, "none", None)
        return self._publish(self._primed, "primed", primed[1])

    def refresh(self, cat: Catalog, state: StateReader) -> bool:
        """Re-read ``rs:items:prior`` if the worker changed it; True when the vector changed.

        StateUnavailable (Redis down) propagates: the current vector is kept.
        """
        if self.runtime is None:
            return False
        with self._lock:
            clock = state.item_prior_clock()
            seen = (clock.get("events"), clock.get("event_ms"), clock.get("half_life_s"), str(cat.n))
            if seen == self._seen:
                return False
            clock, members = state.item_prior()  # clock and zset in one MULTI: a consistent pair
            try:
                events, event_ms, half_life = int(clock["events"]), int(clock["event_ms"]), float(clock["half_life_s"])
            except (KeyError, ValueError):
                events, event_ms, half_life = 0, 0, 0.0
            if events <= 0 or not members:
                self._seen, self.events = seen, 0
                return self._fallback()
            trending = np.full(cat.n, -np.inf)
            index_of = cat.index_of
            for mid, score in members:
                i = index_of.get(mid)
                if i is not None:
                    trending[i] = score
            now_s = event_ms / 1000.0
            try:
                vec = self.runtime.prior_logits(trending, now_s, half_life_s=half_life, catalogue=True)
            except ModelError as exc:  # the worker kept the zset for another model: keep the primed counts
                self.last_error = str(exc)
                self._seen, self.events = seen, 0
                return self._fallback()
            self.last_error = None
            self._seen, self.events = seen, events
            return self._publish(vec, "redis", now_s)
