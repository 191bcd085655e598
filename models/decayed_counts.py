"""The streaming item prior for the yardsticks: decayed event counts, as the hybrid VAE keeps them.

The hybrid VAE adds ``beta * log(1 + c_i(now))`` to its logits, where ``c_i(now)`` counts the rating
events on movie ``i`` decayed with a half-life in event time (``models/runtime.py``). Giving the
baselines the same prior keeps the comparison fair ("the same tricks and tuning budget"):
:class:`DecayedItemCounts` keeps those counts with the same arithmetic (:func:`trending_increment`,
:func:`decayed_log_counts`), and :func:`with_prior` adds them to scores that are not logits.
"""

from __future__ import annotations

import numpy as np

from models.data import Events
from models.runtime import decayed_log_counts, trending_increment

__all__ = ["DecayedItemCounts", "with_prior"]

DAY_S = 86400.0


class DecayedItemCounts:
    """``t_i = log sum_e exp(d * ts_e)`` per movie (``d = ln 2 / half-life``) and the latest event time.

    >>> c = DecayedItemCounts(2, half_life_days=1.0).prime(Events(np.array([0]), np.array([1]),
    ...     np.array([4.0], np.float32), np.array([0])))
    >>> c.observe(1, ts=86400.0)  # one event a day old (weight 0.5) and one now (weight 1)
    >>> [round(float(v), 4) for v in c.log1p_counts()]
    [0.0, 0.9163]
    """

    def __init__(self, n_items: int, half_life_days: float) -> None:
        self.half_life_s = float(half_life_days) * DAY_S
        self.trending = np.full(n_items, -np.inf)
        self.now = 0.0

    def prime(self, events: Events) -> DecayedItemCounts:
        """Count ``events`` (HISTORY); the clock is their last timestamp."""
        self.trending[:] = -np.inf
        np.logaddexp.at(self.trending, events.item.astype(np.int64), trending_increment(events.ts, self.half_life_s))
        self.now = float(events.ts.max()) if len(events) else 0.0
        return self

    def observe(self, item: int, ts: float | None) -> None:
        """Count one event (any rating, as the worker's ``rs:items:prior``) and move the clock to ``ts``."""
        if ts is None:
            return
        self.trending[item] = np.logaddexp(self.trending[item], float(trending_increment(ts, self.half_life_s)))
        self.now = max(self.now, float(ts))

    def log1p_counts(self) -> np.ndarray:
        """float32 [n_items] ``log(1 + c_i(now))``."""
        return decayed_log_counts(self.trending, self.now, self.half_life_s)


def with_prior(scores: np.ndarray, known: np.ndarray, log1p_counts: np.ndarray, beta: float) -> np.ndarray:
    """``scores / sd + beta * log(1 + c)``, ``sd`` the spread of the user's scores over the ``known`` movies.

    EASE and ItemKNN scores are not logits, and their scale grows with the number of positives a user
    has, so one ``beta`` could not weigh the prior alike for a light and a heavy user. Read as logits at
    a per-user temperature that gives them unit spread, adding ``beta * log(1 + c)`` is the hybrid VAE's
    prior: the model's softmax times ``(1 + c)^beta``. A constant shift changes no ranking, so the mean
    is not removed. A user whose scores are all equal (no positives yet) is ranked by the prior alone.

    >>> s = np.array([0.0, 2.0, 4.0], np.float32)
    >>> [round(float(v), 3) for v in with_prior(s, np.ones(3, bool), np.array([1.0, 0.0, 0.0], np.float32), 2.0)]
    [2.0, 1.225, 2.449]
    """
    sd = float(np.std(scores[known])) if known.any() else 0.0
    out = scores / sd if sd > 0.0 else np.zeros_like(scores)
    return (out + np.float32(beta) * log1p_counts).astype(np.float32, copy=False)
