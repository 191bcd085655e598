"""The live hit-rate watch (monitoring/hit_rate.py): closed serving days, the fall rule against a hand-worked
two-proportion example, and a fall asking ``rs:challenger`` for a challenger once per day, seen in /health."""

from __future__ import annotations

import math

import pytest
import redis
from fastapi.testclient import TestClient

from gateway.app import create_app
from monitoring.hit_rate import DayCounts, closed_days, day_counts, hit_rate_check, watch
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.challenger import decode_challenger
from tests.test_gateway_api import make_gateway

DAY = keys.EXPERIMENT_DAY_MS


def test_a_day_is_closed_once_the_window_of_its_last_list_has_ended() -> None:
    days = [DayCounts(10, 5, 1), DayCounts(11, 5, 1)]
    window = 7 * DAY
    assert closed_days(days, 11 * DAY + window - 1, window) == []  # day 10's last list served at 11 * DAY - 1
    assert closed_days(days, 12 * DAY + window - 1, window) == days[:1]  # day 11's lists still open
    assert closed_days(days, 12 * DAY + window, window) == days


def test_a_significant_fall_past_the_threshold_is_a_fall() -> None:
    """Baseline 5 days of 1,000 lists with 200 hit, recent 3 days of 1,000 with 100 hit. By hand: p0 0.2, p1 0.1,
    se = sqrt(.1 * .9 / 3000 + .2 * .8 / 5000) = 0.0078740, interval -0.1 +- 0.0154330."""
    days = [DayCounts(d, 1000, 200) for d in range(5)] + [DayCounts(d, 1000, 100) for d in range(5, 8)]
    got = hit_rate_check(days, 8 * DAY, 0, recent_days=3, fall=0.2, min_lists=200)
    assert got.fell and got.day == 7 and (got.baseline_lists, got.recent_lists) == (5000, 3000)
    assert got.low == pytest.approx(-0.1154330, abs=1e-6) and got.high == pytest.approx(-0.0845670, abs=1e-6)
    assert got.reason.startswith("hit rate fell: 0.1000 over the last 3 closed days vs 0.2000 before")
    # a fall smaller than asked, or one the interval does not show, or too few lists: no fall
    assert not hit_rate_check(days, 8 * DAY, 0, recent_days=3, fall=0.6, min_lists=200).fell
    small = [DayCounts(d, 20, 4) for d in range(5)] + [DayCounts(d, 20, 2) for d in range(5, 8)]
    assert not hit_rate_check(small, 8 * DAY, 0, recent_days=3, fall=0.2, min_lists=50).fell  # 60 vs 100: too few
    noisy = hit_rate_check(small, 8 * DAY, 0, recent_days=3, fall=0.2, min_lists=10)
    se = math.sqrt(0.1 * 0.9 / 60 + 0.2 * 0.8 / 100)
    assert not noisy.fell and noisy.high == pytest.approx(-0.1 + 1.959964 * se, abs=1e-5) and noisy.high > 0


def _fall_in_redis(client: redis.Redis) -> None:
    """Two arms whose lists' hit rate halves over the last 3 of 8 days, every window closed."""
    client.sadd(keys.EXPERIMENT_ARMS, "control:new", "diverse:new")
    for arm in ("control:new", "diverse:new"):
        fields = {f"{d}:lists": 500 for d in range(100, 108)}
        fields |= {f"{d}:hit_lists_20": 100 if d < 105 else 50 for d in range(100, 108)}
        client.hset(keys.experiment(arm, "days"), mapping=fields)
    client.hset(keys.ITEMS_PRIOR_CLOCK, mapping={"event_ms": 108 * DAY + 7 * DAY, "events": 1, "half_life_s": 1})


def test_a_fall_asks_for_one_challenger_per_closed_day_and_health_shows_it(
    live_settings: Settings, rclient: redis.Redis, runtime, items
) -> None:
    _fall_in_redis(rclient)
    raw = keys.text_hash(rclient.hgetall(keys.experiment("control:new", "days")))
    assert day_counts({"x": raw})[0] == DayCounts(100, 500, 100)
    check, asked = watch(rclient, live_settings)
    assert check.fell and asked and check.day == 107
    again, asked_again = watch(rclient, live_settings)  # the same closed day: asked once
    assert again.fell and not asked_again
    challenger = decode_challenger(rclient.hgetall(keys.CHALLENGER))
    assert (challenger.requested, challenger.pending, challenger.hit_rate_day) == (1, 1, 107)
    assert challenger.reason is not None and challenger.reason.startswith("hit rate fell: 0.1000")
    with TestClient(create_app(live_settings, gateway=make_gateway(live_settings, runtime, items))) as tc:
        health = tc.get("/health").json()
    assert health["hit_rate"]["fell"] and health["hit_rate"]["recent_rate"] == pytest.approx(0.1)
    assert health["challenger"]["pending"] == 1
    # the next day closes with the fall still there: one more request
    rclient.hset(keys.experiment("control:new", "days"), mapping={"108:lists": 500, "108:hit_lists_20": 50})
    rclient.hset(keys.ITEMS_PRIOR_CLOCK, "event_ms", 109 * DAY + 7 * DAY)
    assert watch(rclient, live_settings)[1]
    assert decode_challenger(rclient.hgetall(keys.CHALLENGER)).requested == 2


def test_retrain_when_requested_runs_a_round_after_a_fall_and_not_before(
    live_settings: Settings, rclient: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``reelstream retrain --when-requested``: the round's watch turns a fall into a request, which the same
    round answers by training (``_retrain`` stands in for the training itself, tested in test_retrain.py)."""
    from reelstream.shell.commands import retrain

    rounds: list[dict] = []
    monkeypatch.setattr(retrain, "_retrain", lambda **args: rounds.append(args))
    retrain._round({"margin": 0.0}, when_requested=True)  # no counters, no alarm: nothing to do
    assert rounds == [] and decode_challenger(rclient.hgetall(keys.CHALLENGER)).requested == 0
    _fall_in_redis(rclient)
    retrain._round({"margin": 0.0}, when_requested=True)
    assert rounds == [{"margin": 0.0}]
    assert decode_challenger(rclient.hgetall(keys.CHALLENGER)).pending == 1  # the stub answers nothing
