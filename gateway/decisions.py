"""The gateway's decision logic as named pure predicates, one per rule, and the function that orders them.

==========  =====================================================================
Rule 1      Redis failed less than ``retry_s`` ago: do not try it, degrade now.
Rule 2      Redis is unreachable: personalised lists fall back to store popularity
            (``degraded: true``); endpoints without a fallback answer 503.
Rule 3      No state for the user (unknown, or no events applied yet): cold start.
Rule 4      The state's latent vector does not fit the loaded model (another model
            wrote it, or it is corrupt): treat as cold start rather than mis-score.
Rule 5      Cold start uses trending (Redis zset) when it has items, else store
            popularity.
Rule 6      A worker whose heartbeat is older than ``stale_ms`` (or in the future by
            more than that) is not alive.
==========  =====================================================================

:func:`choose_source` applies Rules 2-5 in that order (Rules 3 and 4 through :func:`is_cold_start`, which the
request evaluates once, to know whether to read trending); ``tests/test_gateway_rules.py`` holds the numbered
case table.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

__all__ = [
    "Source",
    "choose_source",
    "is_cold_start",
    "rule_1_redis_backing_off",
    "rule_3_unknown_user",
    "rule_4_state_does_not_fit_model",
    "rule_5_trending_available",
    "rule_6_worker_alive",
]


class Source(StrEnum):
    """Where a list's relevance comes from."""

    PERSONALISED = "personalised"
    TRENDING = "trending"
    POPULARITY = "popularity"


def rule_1_redis_backing_off(now: float, down_until: float) -> bool:
    """Rule 1: Redis failed recently; skip it until ``down_until``.

    >>> rule_1_redis_backing_off(10.0, 10.5), rule_1_redis_backing_off(11.0, 10.5)
    (True, False)
    """
    return now < down_until


def rule_3_unknown_user(exists: bool, mu: np.ndarray | None) -> bool:
    """Rule 3: nothing to personalise from."""
    return not exists or mu is None


def rule_4_state_does_not_fit_model(mu: np.ndarray | None, latent: int) -> bool:
    """Rule 4: a latent vector of the wrong size or with non-finite values."""
    return mu is not None and (mu.shape != (latent,) or not bool(np.isfinite(mu).all()))


def rule_5_trending_available(n_trending: int) -> bool:
    """Rule 5: trending has at least one item we can serve."""
    return n_trending > 0


def rule_6_worker_alive(heartbeat_ms: int, now_ms: int, stale_ms: int) -> bool:
    """Rule 6: a heartbeat is fresh.

    >>> rule_6_worker_alive(1_000, 5_000, 10_000), rule_6_worker_alive(1_000, 20_000, 10_000)
    (True, False)
    """
    return abs(now_ms - heartbeat_ms) <= stale_ms


def is_cold_start(exists: bool, mu: np.ndarray | None, latent: int) -> bool:
    """Rules 3 and 4: no state to score (the request then reads trending, which Rule 5 needs)."""
    return rule_3_unknown_user(exists, mu) or rule_4_state_does_not_fit_model(mu, latent)


def choose_source(*, redis_ok: bool, cold: bool, n_trending: int) -> tuple[Source, bool]:
    """``(source, degraded)`` for a recommendation request, by Rules 2-5 in order (``cold``: :func:`is_cold_start`)."""
    if not redis_ok:  # Rule 2
        return Source.POPULARITY, True
    if cold:  # Rules 3 and 4
        return (Source.TRENDING if rule_5_trending_available(n_trending) else Source.POPULARITY), False
    return Source.PERSONALISED, False
