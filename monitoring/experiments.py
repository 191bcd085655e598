"""A/B arms against the control: the lift in hit rate, its 95% interval and a verdict, as pure functions.

An arm's hit rate is ``hits / impressions`` (docs/experiments.md says what counts as a hit). The lift of an
arm over the control is the difference of the two rates, with the unpooled two-proportion (Wald) interval::

    d = p1 - p0,    se = sqrt(p1 (1 - p1) / n1 + p0 (1 - p0) / n0),    d +- z se   (z = 1.96 for 95%)

The verdict reads the interval: ``ahead`` when it lies above 0, ``behind`` when below, ``not yet decided``
when it straddles 0 or either arm has fewer than ``min_impressions`` (an interval from a handful of lists
says nothing). Impressions of one user are not independent, so with few users per arm the interval is too
narrow; the sample size is reported next to it for that reason.

>>> lift = arm_lift(Arm("diverse", 1000, 150), Arm("control", 1000, 100))
>>> round(lift.diff, 4), round(lift.low, 4), round(lift.high, 4), lift.verdict
(0.05, 0.0211, 0.0789, 'ahead')
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["MIN_IMPRESSIONS", "Z_95", "Arm", "Lift", "Verdict", "arm_lift", "report", "verdict"]

#: The normal quantile of a two-sided 95% interval.
Z_95 = 1.959963984540054
#: Fewer impressions than this in either arm: not yet decided, whatever the interval says.
MIN_IMPRESSIONS = 100

Verdict = Literal["ahead", "behind", "not yet decided"]


@dataclass(frozen=True)
class Arm:
    """One arm's counts: lists served and the hits among them."""

    name: str
    impressions: int
    hits: int

    @property
    def rate(self) -> float:
        return self.hits / self.impressions if self.impressions else 0.0


@dataclass(frozen=True)
class Lift:
    """An arm against the control: the rate difference, its interval and the verdict."""

    arm: str
    control: str
    rate: float
    control_rate: float
    diff: float  #: arm rate - control rate
    low: float
    high: float
    relative: float  #: diff / control rate (inf when the control rate is 0 and diff > 0)
    impressions: int
    control_impressions: int
    verdict: Verdict


def verdict(low: float, high: float, n_arm: int, n_control: int, min_impressions: int = MIN_IMPRESSIONS) -> Verdict:
    """The interval's reading (module docstring).

    >>> verdict(0.01, 0.05, 500, 500), verdict(-0.05, -0.01, 500, 500), verdict(-0.01, 0.05, 500, 500)
    ('ahead', 'behind', 'not yet decided')
    >>> verdict(0.01, 0.05, 99, 500)
    'not yet decided'
    """
    if min(n_arm, n_control) < min_impressions:
        return "not yet decided"
    if low > 0:
        return "ahead"
    if high < 0:
        return "behind"
    return "not yet decided"


def arm_lift(arm: Arm, control: Arm, z: float = Z_95, min_impressions: int = MIN_IMPRESSIONS) -> Lift:
    """The lift of ``arm`` over ``control`` with its two-proportion interval (module docstring)."""
    p1, p0 = arm.rate, control.rate
    diff = p1 - p0
    if arm.impressions and control.impressions:
        se = math.sqrt(p1 * (1 - p1) / arm.impressions + p0 * (1 - p0) / control.impressions)
        low, high = diff - z * se, diff + z * se
    else:
        low, high = -math.inf, math.inf
    relative = diff / p0 if p0 > 0 else (math.inf if diff > 0 else 0.0)
    return Lift(arm.name, control.name, p1, p0, diff, low, high, relative, arm.impressions, control.impressions,
                verdict(low, high, arm.impressions, control.impressions, min_impressions))  # fmt: skip


def _num(fields: Mapping[str, str], name: str) -> float:
    try:
        return float(fields.get(name, 0) or 0)
    except ValueError:
        return 0.0


def report(counters: Mapping[str, Mapping[str, str]], control: str, catalogue: int) -> dict[str, Any]:
    """Each variant (its segments summed) against ``control``, from the worker's ``rs:exp:{variant:segment}``
    counters (``movies``: how many distinct movies the arm served). Hit rate: lists with a hit in their top
    20 over lists served (docs/experiments.md).

    >>> r = report({"control:new": {"impressions": "1000", "hit_lists_20": "100", "hits_20": "120",
    ...                             "dcg_20": "50", "hits": "130", "hit_rating_sum": "520", "users": "10",
    ...                             "movies": "40", "novelty_lists": "800", "novelty_sum": "2400"},
    ...             "diverse:new": {"impressions": "1000", "hit_lists_20": "150", "users": "9", "movies": "80"}},
    ...            "control", 100)
    >>> [(a["variant"], a["hit_rate"], a["verdict"]) for a in r["arms"]]
    [('control', 0.1, 'control'), ('diverse', 0.15, 'ahead')]
    >>> r["arms"][0]["ndcg_20"], r["arms"][0]["mean_hit_rating"], r["arms"][1]["coverage"]
    (0.05, 4.0, 0.8)
    >>> r["arms"][0]["novelty"], r["arms"][1]["novelty"]  # lists recorded without one are not in the mean
    (3.0, None)
    """
    by_variant: dict[str, dict[str, float]] = {}
    for arm, fields in counters.items():
        variant = arm.rsplit(":", 1)[0]
        acc = by_variant.setdefault(variant, {})
        for name in ("impressions", "users", "hits", "hit_lists_20", "hits_5", "hits_10", "hits_20", "dcg_20",
                     "hit_rating_sum", "movies", "novelty_lists", "novelty_sum"):  # fmt: skip
            acc[name] = acc.get(name, 0.0) + _num(fields, name)
    base = by_variant.get(control, {})
    control_arm = Arm(control, int(base.get("impressions", 0)), int(base.get("hit_lists_20", 0)))
    arms = []
    for variant in sorted(by_variant, key=lambda v: (v != control, v)):
        c = by_variant[variant]
        n = int(c["impressions"])
        row: dict[str, Any] = {
            "variant": variant, "impressions": n, "users": int(c["users"]), "hit_lists_20": int(c["hit_lists_20"]),
            "hit_rate": c["hit_lists_20"] / n if n else 0.0,
            **{f"hits_{k}_per_list": c[f"hits_{k}"] / n if n else 0.0 for k in (5, 10, 20)},
            "ndcg_20": c["dcg_20"] / n if n else 0.0,
            "mean_hit_rating": c["hit_rating_sum"] / c["hits"] if c["hits"] else None,
            "coverage": c["movies"] / catalogue if catalogue else None,
            "novelty": c["novelty_sum"] / c["novelty_lists"] if c["novelty_lists"] else None,
        }  # fmt: skip
        if variant == control:
            row.update(diff=None, low=None, high=None, relative=None, verdict="control")
        else:
            lift = arm_lift(Arm(variant, n, int(c["hit_lists_20"])), control_arm)
            row.update(diff=lift.diff, low=_finite(lift.low), high=_finite(lift.high),
                       relative=_finite(lift.relative), verdict=lift.verdict)  # fmt: skip
        arms.append(row)
    return {"control": control, "metric": "hit_lists_20 / impressions", "arms": arms}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
