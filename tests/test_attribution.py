"""Attribution of ratings to served lists (the M and R ops, streams/store.py; ImpressionProcessor): on event
time, whichever topic is read first, once per (list, movie), the Lua script and its dict twin alike."""

from __future__ import annotations

import math

import numpy as np
import pytest
import redis

from models.runtime import ModelRuntime
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.wire import codec_for
from streams.events import rating_event, user_key
from streams.online import OnlineRatingModel
from streams.processor import ImpressionProcessor, Message, RatingProcessor
from streams.store import MemoryFeatureTables, RedisFeatureTables, parse_impression_record, redis_snapshot
from tests.stream_support import diff_states

MOVIES = np.arange(1, 101)
DAY_MS = 86_400_000
T0 = 1_500_000_000_000
RATINGS, IMPRESSIONS = "ratings", "impressions"


def _impression(offset: int, iid: str, user: int, mids: list[int], served_ms: int, variant: str = "control",
                segment: str = "new", novelty: float | None = None) -> Message:  # fmt: skip
    ev = {"impression_id": iid, "user_id": user, "movie_ids": mids, "variant": variant, "segment": segment,
          "model_version": "m", "rules_version": "r", "source": "personalised", "cached": False,
          "degraded": False, "exploration": "none", "served_ms": served_ms, "clock": "event",
          "novelty": novelty}  # fmt: skip
    return Message(IMPRESSIONS, 0, offset, codec_for("ImpressionEvent").encode(ev), key=user_key(user))


def _rating(offset: int, user: int, movie: int, stars: float, ts_ms: int) -> Message:
    ev = rating_event(user, movie, stars, ts_ms, "replay")
    return Message(RATINGS, 0, offset, codec_for("RatingEvent").encode(ev), key=user_key(user))


def _processors(store) -> tuple[RatingProcessor, ImpressionProcessor]:
    runtime = ModelRuntime.random(MOVIES, seed=3)
    ratings = RatingProcessor(runtime, store, topic=RATINGS, min_ts_ms=0, max_future_ms=10**15,
                              half_life_s=3600.0, online=OnlineRatingModel(seed=1))  # fmt: skip
    return ratings, ImpressionProcessor(store, topic=IMPRESSIONS)


IMPS = [
    _impression(0, "a", 1, [10, 11, 12, 13, 14, 15], T0),  # user 1, arm control:new
    _impression(1, "b", 2, [20, 21, 22], T0, variant="diverse"),  # user 2, arm diverse:new
    _impression(2, "c", 1, [12, 30], T0 + DAY_MS),  # user 1 again, later: 12 is on two lists
]
RATES = [
    _rating(0, 1, 12, 4.5, T0 + 2 * DAY_MS),  # in both of user 1's windows: a hit of each list (rank 3, rank 1)
    _rating(1, 1, 15, 3.0, T0 + 8 * DAY_MS),  # 8 days after "a": outside its 7-day window, a miss
    _rating(2, 2, 22, 5.0, T0 + 3 * DAY_MS),  # "b" rank 3
    _rating(3, 2, 99, 2.0, T0 + 3 * DAY_MS),  # not served: no hit
    _rating(4, 1, 10, 1.0, T0 - 1),  # before "a" was served: not a hit of it
]


def _counters(store) -> dict[str, dict]:
    snap = store.snapshot() if isinstance(store, MemoryFeatureTables) else redis_snapshot(store.client)
    return {k: v for k, v in snap.items() if k.startswith("rs:exp:")}


def _expected() -> dict[str, dict]:
    """By hand from docs/experiments.md: hits and their ranks, DCG = sum 1 / log2(rank + 1)."""
    return {
        "rs:exp:control:new": {"impressions": 2, "users": 1, "hits": 2, "hit_lists_20": 2, "hits_5": 2,
                               "hits_10": 2, "hits_20": 2, "dcg_20": 1 / math.log2(4) + 1 / math.log2(2),
                               "hit_rating_sum": 9.0},
        "rs:exp:diverse:new": {"impressions": 1, "users": 1, "hits": 1, "hit_lists_20": 1, "hits_5": 1,
                               "hits_10": 1, "hits_20": 1, "dcg_20": 1 / math.log2(4), "hit_rating_sum": 5.0},
    }  # fmt: skip


def _check(store) -> None:
    got = _counters(store)
    for key, fields in _expected().items():
        for name, value in fields.items():
            assert float(got[key][name]) == pytest.approx(value, rel=1e-9), (key, name)
    assert got["rs:exp:arms"] == ["control:new", "diverse:new"]
    day = T0 // keys.EXPERIMENT_DAY_MS  # the lists by serving day: a later hit counts on its list's day
    assert {k: int(v) for k, v in got["rs:exp:control:new:days"].items()} == {
        f"{day}:lists": 1,
        f"{day}:hit_lists_20": 1,
        f"{day + 1}:lists": 1,
        f"{day + 1}:hit_lists_20": 1,
    }
    assert {k: int(v) for k, v in got["rs:exp:diverse:new:days"].items()} == {
        f"{day}:lists": 1,
        f"{day}:hit_lists_20": 1,
    }
    assert got["rs:exp:control:new:movies"] == sorted(["10", "11", "12", "13", "14", "15", "30"])


@pytest.mark.parametrize("order", ["impressions first", "ratings first", "interleaved"])
def test_hits_on_event_time_whichever_topic_is_read_first(order: str) -> None:
    store = MemoryFeatureTables()
    ratings, impressions = _processors(store)
    if order == "impressions first":
        impressions.commit(impressions.plan(IMPS))
        ratings.run(RATES)
    elif order == "ratings first":
        ratings.run(RATES)
        impressions.commit(impressions.plan(IMPS))
    else:
        impressions.commit(impressions.plan(IMPS[:1]))
        ratings.run(RATES[:2])
        impressions.commit(impressions.plan(IMPS[1:]))
        ratings.run(RATES[2:])
    _check(store)


def test_redelivery_counts_nothing_again_and_the_lua_script_agrees(live_settings: Settings) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    store = RedisFeatureTables(client)
    ratings, impressions = _processors(store)
    impressions.commit(impressions.plan(IMPS[:2]))
    ratings.run(RATES[:3])
    impressions.commit(impressions.plan(IMPS))  # redelivered with one new
    ratings.run(RATES)  # redelivered with two new
    _check(store)
    twin = MemoryFeatureTables()
    t_ratings, t_impressions = _processors(twin)
    t_impressions.commit(t_impressions.plan(IMPS))
    t_ratings.run(RATES)
    assert diff_states(twin.snapshot(), redis_snapshot(client)) == []


def test_a_user_keeps_only_the_latest_lists() -> None:
    store = MemoryFeatureTables()
    _, impressions = _processors(store)
    msgs = [_impression(i, f"i{i}", 7, [1, 2], T0 + i) for i in range(keys.IMPRESSIONS_KEPT + 5)]
    impressions.commit(impressions.plan(msgs))
    kept = store.hashes[keys.user_impressions(7)]
    assert sorted(kept) == sorted(f"i{i}" for i in range(5, keys.IMPRESSIONS_KEPT + 5))
    assert store.zsets[keys.user_impressions_order(7)] == {iid: float(parse_impression_record(kept[iid])[0])
                                                           for iid in kept}  # fmt: skip
    assert int(store.hashes["rs:exp:control:new"]["impressions"]) == keys.IMPRESSIONS_KEPT + 5


def test_a_bad_impression_is_a_dead_letter_with_the_reason() -> None:
    store = MemoryFeatureTables()
    _, impressions = _processors(store)
    plan = impressions.plan([_impression(0, "x", 0, [1], T0), _impression(1, "y", 3, [1, 1], T0),
                             _impression(2, "z", 3, [1], T0, novelty=-0.5), _impression(3, "w", 3, [1], T0,
                                                                                        novelty=math.nan)])  # fmt: skip
    assert [d.record["reason"] for d in plan.dead] == ["bad_impression"] * 4 and plan.applied == 0
    assert "positive id" in plan.dead[0].record["error"] and "distinct" in plan.dead[1].record["error"]
    assert [d.record["error"] for d in plan.dead[2:]] == [
        "novelty -0.5 is not a finite self-information (>= 0)",
        "novelty nan is not a finite self-information (>= 0)",
    ]


def test_novelty_is_summed_per_arm_once_per_list_and_lists_without_one_are_left_out(live_settings: Settings) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    msgs = [_impression(0, "a", 1, [1, 2], T0, novelty=2.5), _impression(1, "b", 2, [3], T0, novelty=6.0),
            _impression(2, "c", 3, [4], T0), _impression(3, "d", 4, [5], T0, variant="diverse", novelty=1.0),
            _impression(4, "a", 1, [1, 2], T0, novelty=2.5)]  # "a" produced twice: counted once  # fmt: skip
    stores = [RedisFeatureTables(client), MemoryFeatureTables()]
    for store in stores:
        _, impressions = _processors(store)
        impressions.commit(impressions.plan(msgs))
    snap = redis_snapshot(client)
    assert diff_states(stores[1].snapshot(), snap) == []
    control, diverse = snap["rs:exp:control:new"], snap["rs:exp:diverse:new"]
    assert (int(control["impressions"]), int(control["novelty_lists"]), float(control["novelty_sum"])) == (3, 2, 8.5)
    assert (int(diverse["novelty_lists"]), float(diverse["novelty_sum"])) == (1, 1.0)


def test_eviction_and_late_ratings_agree_between_the_lua_script_and_its_twin(live_settings: Settings) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    msgs = [_impression(i, f"i{i}", 7, [1 + i % 3, 50 + i], T0 + i * 1000) for i in range(keys.IMPRESSIONS_KEPT + 5)]
    late = [_rating(0, 7, 1, 4.0, T0 + DAY_MS), _rating(1, 7, 50, 5.0, T0 + DAY_MS), _rating(2, 7, 70, 3.5, T0)]
    stores = [RedisFeatureTables(client), MemoryFeatureTables()]
    for store in stores:
        ratings, impressions = _processors(store)
        impressions.commit(impressions.plan(msgs))
        ratings.run(late)  # 50 was on an evicted list only: no hit; 1 is on 9 kept lists
    snap = redis_snapshot(client)
    assert diff_states(stores[1].snapshot(), snap) == []
    assert int(snap["rs:exp:control:new"]["hits"]) == len(
        [i for i in range(5, keys.IMPRESSIONS_KEPT + 5) if i % 3 == 0]
    )


def test_a_kept_list_of_an_older_layout_is_skipped_not_fatal(live_settings: Settings) -> None:
    """A record the previous worker version wrote (msgpack) neither fails the rating's commit nor counts."""
    import msgpack

    client = redis.Redis.from_url(live_settings.redis_url)
    client.hset(keys.user_impressions(1), "old", msgpack.packb([T0, "control:new", 0, 12]))
    store = RedisFeatureTables(client)
    ratings, impressions = _processors(store)
    impressions.commit(impressions.plan(IMPS))
    assert ratings.run(RATES)  # committed
    _check(store)  # the same counts as without the old record
