"""The live hit-rate watch: has the share of served lists with a hit fallen? (docs/experiments.md)

The worker counts every arm's lists, and those with a hit in their top 20, by UTC day of serving
(``rs:exp:{arm}:days``). A day is *closed* once the attribution window of its last list has ended (in event
time: the latest event time the worker applied), so its hit rate is final. The watch compares the latest
``recent_days`` closed days with every closed day before them, all arms summed: the hit rate has **fallen**
when the recent rate is below the baseline's by more than ``fall`` (relative) and the two-proportion 95%
interval of the difference lies entirely below 0 (:func:`monitoring.experiments.arm_lift`).

A fall asks the continual-training path for a challenger the way a drift alarm does (``rs:challenger``
``requested``, :func:`ask_for_challenger`), once per closed day judged: ``reelstream retrain`` runs the watch
at the start of every round and ``--when-requested`` then trains one. ``reelstream lag`` and ``GET /health``
show the verdict.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from monitoring.experiments import Arm, arm_lift
from reelstream.settings import Settings
from schemas import redis_keys as keys

__all__ = ["DayCounts", "HitRateCheck", "ask_for_challenger", "closed_days", "day_counts", "hit_rate_check",
           "judge", "judge_counts", "read_days", "watch"]  # fmt: skip

DAY_MS = keys.EXPERIMENT_DAY_MS
#: ``rs:challenger`` ``reason`` prefix of a request from the watch.
REASON = "hit rate"


@dataclass(frozen=True, slots=True)
class DayCounts:
    day: int  #: UTC day of serving (served_ms // DAY_MS)
    lists: int
    hit_lists: int  #: lists with a hit at rank <= 20


def day_counts(raw_by_arm: Mapping[str, Mapping[str, str]]) -> list[DayCounts]:
    """Every arm's ``rs:exp:{arm}:days`` summed per day, oldest first (fields that do not parse are skipped).

    >>> day_counts({"a": {"3:lists": "10", "3:hit_lists_20": "2"}, "b": {"3:lists": "5", "4:lists": "1", "x": "?"}})
    [DayCounts(day=3, lists=15, hit_lists=2), DayCounts(day=4, lists=1, hit_lists=0)]
    """
    acc: dict[int, list[int]] = {}
    for fields in raw_by_arm.values():
        for name, value in fields.items():
            day_s, _, what = name.partition(":")
            if what not in ("lists", "hit_lists_20"):
                continue
            try:
                day, n = int(day_s), int(float(value))
            except ValueError:
                continue
            acc.setdefault(day, [0, 0])[what == "hit_lists_20"] += n
    return [DayCounts(d, n, h) for d, (n, h) in sorted(acc.items())]


def closed_days(days: list[DayCounts], now_ms: int, window_ms: int) -> list[DayCounts]:
    """The days whose every list's attribution window has ended by ``now_ms``: their hit rate is final.

    >>> closed_days([DayCounts(0, 1, 0), DayCounts(1, 1, 0)], now_ms=2 * DAY_MS + 10, window_ms=DAY_MS)
    [DayCounts(day=0, lists=1, hit_lists=0)]
    """
    return [d for d in days if (d.day + 1) * DAY_MS + window_ms <= now_ms]


@dataclass(frozen=True)
class HitRateCheck:
    """The watch's verdict (module docstring); rates and interval None when there is too little to judge."""

    fell: bool
    reason: str
    day: int | None = None  #: the latest closed day judged
    baseline_lists: int = 0
    baseline_rate: float | None = None
    recent_lists: int = 0
    recent_rate: float | None = None
    low: float | None = None  #: 95% interval of recent - baseline
    high: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hit_rate_check(
    days: list[DayCounts], now_ms: int, window_ms: int, *, recent_days: int, fall: float, min_lists: int
) -> HitRateCheck:
    """Judge the closed days (module docstring).

    >>> d = [DayCounts(i, 1000, 200) for i in range(5)] + [DayCounts(i, 1000, 100) for i in range(5, 8)]
    >>> c = hit_rate_check(d, 9 * DAY_MS, 0, recent_days=3, fall=0.2, min_lists=200)
    >>> c.fell, c.baseline_rate, c.recent_rate, c.day
    (True, 0.2, 0.1, 7)
    >>> hit_rate_check(d, 9 * DAY_MS, 0, recent_days=3, fall=0.6, min_lists=200).fell  # 50% < the 60% asked
    False
    >>> hit_rate_check(d[:3], 9 * DAY_MS, 0, recent_days=3, fall=0.2, min_lists=200).reason
    'not enough closed days: 3 (3 recent and at least 1 before them)'
    """
    closed = closed_days(days, now_ms, window_ms)
    if len(closed) <= recent_days:
        return HitRateCheck(False, f"not enough closed days: {len(closed)} ({recent_days} recent and at least 1 "
                                   "before them)")  # fmt: skip
    base, recent = closed[:-recent_days], closed[-recent_days:]
    n0, h0 = sum(d.lists for d in base), sum(d.hit_lists for d in base)
    n1, h1 = sum(d.lists for d in recent), sum(d.hit_lists for d in recent)
    day = closed[-1].day
    if n0 < min_lists or n1 < min_lists:
        return HitRateCheck(False, f"too few lists: {n0:,} before, {n1:,} recent (at least {min_lists:,} each)", day,
                            n0, None, n1, None)  # fmt: skip
    lift = arm_lift(Arm("recent", n1, h1), Arm("baseline", n0, h0))
    fell = lift.rate < lift.control_rate * (1.0 - fall) and lift.high < 0
    what = "fell" if fell else "holds"
    reason = (f"{REASON} {what}: {lift.rate:.4f} over the last {recent_days} closed days vs {lift.control_rate:.4f} "
              f"before (difference {lift.diff:+.4f}, 95% interval {lift.low:+.4f} .. {lift.high:+.4f}; asks at a "
              f"{fall:.0%} fall)")  # fmt: skip
    return HitRateCheck(fell, reason, day, n0, lift.control_rate, n1, lift.rate, lift.low, lift.high)


def read_days(client: redis.Redis) -> dict[str, dict[str, str]]:
    """Every arm's ``rs:exp:{arm}:days`` (arms from ``rs:exp:arms``)."""
    arms = sorted(keys.text(a) for a in client.smembers(keys.EXPERIMENT_ARMS))
    pipe = client.pipeline(transaction=False)
    for arm in arms:
        pipe.hgetall(keys.experiment(arm, "days"))
    return {arm: keys.text_hash(raw) for arm, raw in zip(arms, pipe.execute(), strict=True)}


_ASK = """
local last = tonumber(redis.call('HGET', KEYS[1], 'hit_rate_day') or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('HSET', KEYS[1], 'hit_rate_day', ARGV[1], 'reason', ARGV[2], 'last_alarm_ms', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'requested', 1)
return 1
"""


def ask_for_challenger(client: redis.Redis, check: HitRateCheck, now_ms: int) -> bool:
    """Count a fall as one challenger request in ``rs:challenger``, once per closed day judged (atomic: two
    watchers judging the same day ask once). True when this call asked."""
    if not check.fell or check.day is None:
        return False
    return bool(client.eval(_ASK, 1, keys.CHALLENGER, check.day, check.reason, now_ms))


def judge_counts(
    days_by_arm: Mapping[str, Mapping[str, str]], event_ms: str | None, settings: Settings, wall_ms: int
) -> HitRateCheck:
    """The watch with ``settings``' parameters; now is ``event_ms``, the latest event time the worker applied
    (``rs:items:prior:clock``), or ``wall_ms`` before any."""
    now_ms = int(float(event_ms)) if event_ms is not None else wall_ms
    return hit_rate_check(day_counts(days_by_arm), now_ms, int(settings.attribution_window_s * 1000),
                          recent_days=settings.hit_rate_recent_days, fall=settings.hit_rate_fall,
                          min_lists=settings.hit_rate_min_lists)  # fmt: skip


def judge(client: redis.Redis, settings: Settings) -> HitRateCheck:
    """The watch on the live counters (read only)."""
    raw = client.hget(keys.ITEMS_PRIOR_CLOCK, "event_ms")
    return judge_counts(read_days(client), None if raw is None else keys.text(raw), settings, int(time.time() * 1000))


def watch(client: redis.Redis, settings: Settings) -> tuple[HitRateCheck, bool]:
    """:func:`judge`, then :func:`ask_for_challenger` on a fall; ``(check, asked)``."""
    check = judge(client, settings)
    return check, ask_for_challenger(client, check, int(time.time() * 1000))
