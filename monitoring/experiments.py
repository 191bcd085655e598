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
from dataclasses import dataclass
from typing import Literal

__all__ = ["MIN_IMPRESSIONS", "Z_95", "Arm", "Lift", "Verdict", "arm_lift", "verdict"]

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
