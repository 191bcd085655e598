"""The arm-vs-control interval and verdict (monitoring/experiments.py) against hand-computed examples."""

from __future__ import annotations

import math

import pytest

from monitoring.experiments import MIN_IMPRESSIONS, Arm, arm_lift


def test_two_proportions_by_hand_an_undecided_arm() -> None:
    # 60/500 = 0.12 against 45/500 = 0.09: se = sqrt(.12 * .88 / 500 + .09 * .91 / 500) = sqrt(.000375)
    # = 0.0193649; 0.03 +- 1.96 * 0.0193649 = (-0.007955, 0.067955): straddles 0
    lift = arm_lift(Arm("b", 500, 60), Arm("a", 500, 45))
    assert lift.diff == pytest.approx(0.03)
    assert (lift.low, lift.high) == (pytest.approx(-0.007955, abs=2e-6), pytest.approx(0.067955, abs=2e-6))
    assert lift.relative == pytest.approx(0.03 / 0.09)
    assert lift.verdict == "not yet decided"


def test_two_proportions_by_hand_ahead_and_behind() -> None:
    # 150/1000 against 100/1000: se = sqrt(.15 * .85 / 1000 + .1 * .9 / 1000) = sqrt(.0002175) = 0.0147479;
    # 0.05 +- 0.0289058 = (0.0210942, 0.0789058)
    ahead = arm_lift(Arm("b", 1000, 150), Arm("a", 1000, 100))
    assert (ahead.low, ahead.high) == (pytest.approx(0.0210942, abs=2e-6), pytest.approx(0.0789058, abs=2e-6))
    assert ahead.verdict == "ahead"
    behind = arm_lift(Arm("a", 1000, 100), Arm("b", 1000, 150))
    assert (behind.low, behind.high) == (pytest.approx(-0.0789058, abs=2e-6), pytest.approx(-0.0210942, abs=2e-6))
    assert behind.verdict == "behind"


def test_a_small_arm_is_not_yet_decided_and_an_empty_one_has_no_interval() -> None:
    few = MIN_IMPRESSIONS - 1
    assert arm_lift(Arm("b", few, few), Arm("a", 1000, 0)).verdict == "not yet decided"
    empty = arm_lift(Arm("b", 0, 0), Arm("a", 1000, 100))
    assert (empty.low, empty.high, empty.verdict) == (-math.inf, math.inf, "not yet decided")
