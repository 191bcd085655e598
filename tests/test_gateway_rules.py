"""Every business-rule type shows its effect; hot reload; A/B bucketing; the decision case table."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
import yaml

from gateway.catalog import Catalog
from gateway.decisions import Source, choose_source, is_cold_start
from gateway.rules import LoadedRules, RulesStore, bucket
from gateway.service import Gateway
from gateway.state import RedisState
from models.runtime import ModelRuntime
from reelstream.settings import Settings
from tests.gateway_support import recommend
from tests.user_state import synthetic_items, write_user

N_ITEMS = 600
MOVIE_IDS = np.arange(1, N_ITEMS + 1) * 3


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime.random(MOVIE_IDS, hidden=16, latent=8, seed=11)


@pytest.fixture(scope="module")
def catalog(runtime: ModelRuntime) -> Catalog:
    return Catalog.build(runtime, synthetic_items(MOVIE_IDS.tolist(), seed=5))


def write_rules(gw: Gateway, base: dict[str, Any] | None = None, **doc: Any) -> LoadedRules:
    """Rewrite the live rules file (a single control arm unless given) and return what the gateway now uses."""
    current = gw.rules.current().doc
    body = {
        "name": "test", "version": current.version + 1, "base": base or {},
        "variants": {"salt": "t", "arms": [{"name": "control", "weight": 1}]},
    } | doc  # fmt: skip
    path = gw.rules.path
    tmp = path.with_name("incoming.yaml")
    tmp.write_text(yaml.safe_dump(body))
    tmp.replace(path)
    return gw.rules.current()


@pytest.fixture
def gw(live_settings: Settings, catalog: Catalog) -> Iterator[Gateway]:
    state = RedisState(live_settings.redis_url)
    g = Gateway(live_settings, catalog, RulesStore(live_settings.rules_path), state)
    write_rules(g)
    yield g
    state.close()


@pytest.fixture
def user(live_settings: Settings, runtime: ModelRuntime) -> int:
    client = redis.Redis.from_url(live_settings.redis_url)
    write_user(client, runtime, 1, [(int(m), 5.0) for m in MOVIE_IDS[:3]])
    client.close()
    return 1


def picks(gw: Gateway, uid: int, k: int = 20, **kw: Any) -> list[int]:
    return [gw.catalog.index(it.movie_id) for it in recommend(gw, uid, k, **kw).items]


def test_rated_items_are_avoided_unless_the_rule_is_off(gw: Gateway, user: int) -> None:
    rated = {gw.catalog.index(m) for m in MOVIE_IDS[:3]}
    gw.settings = gw.settings.model_copy(update={"gateway_candidate_pool": N_ITEMS})  # the whole catalogue
    write_rules(gw, {"diversity": {"mmr_lambda": 1.0, "genre_cap": 1000}})
    assert not rated & set(picks(gw, user, N_ITEMS))
    write_rules(gw, {"avoid": {"rated": False}, "diversity": {"mmr_lambda": 1.0, "genre_cap": 1000}})
    assert rated <= set(picks(gw, user, N_ITEMS))


def test_dislikes_and_items_similar_to_them_are_avoided(gw: Gateway, live_settings, runtime) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    write_user(client, runtime, 2, [(int(MOVIE_IDS[0]), 5.0), (int(MOVIE_IDS[5]), 1.0)])
    cat = gw.catalog
    disliked = cat.index(int(MOVIE_IDS[5]))
    write_rules(gw, {"avoid": {"dislike_similarity": 1.0}})  # only exact copies would be dropped
    before = picks(gw, 2, 50)
    sims = cat.unit[before] @ cat.unit[disliked]
    assert sims.max() >= 0.3
    write_rules(gw, {"avoid": {"dislike_similarity": 0.3}})
    after = picks(gw, 2, 50)
    assert (cat.unit[after] @ cat.unit[disliked]).max() < 0.3 and disliked not in after


def test_excluded_genres_year_window_and_blocklist(gw: Gateway, user: int) -> None:
    cat = gw.catalog
    baseline = picks(gw, user)
    assert any("Drama" in cat.genres[i] for i in baseline) or any("Comedy" in cat.genres[i] for i in baseline)
    write_rules(gw, {"avoid": {"exclude_genres": ["Drama", "Comedy"]}})
    assert not any({"Drama", "Comedy"} & set(cat.genres[i]) for i in picks(gw, user))
    write_rules(gw, {"avoid": {"year_min": 1990, "year_max": 2000}})
    assert all(1990 <= cat.years[i] <= 2000 for i in picks(gw, user))
    blocked = [int(cat.movie_ids[i]) for i in baseline[:5]]
    write_rules(gw, {"avoid": {"blocklist": blocked}})
    assert not set(baseline[:5]) & set(picks(gw, user))


def test_soft_preferences_move_the_list(gw: Gateway, user: int) -> None:
    cat = gw.catalog
    base = picks(gw, user, 30)

    def share(idx: list[int], genre: str) -> int:
        return sum(genre in cat.genres[i] for i in idx)

    write_rules(gw, {"prefer": {"genre_boosts": {"Documentary": 3.0}}, "diversity": {"genre_cap": 100}})
    assert share(picks(gw, user, 30), "Documentary") > share(base, "Documentary")
    write_rules(gw, {"prefer": {"recency_boost": 4.0, "recency_half_life_years": 5}})
    assert cat.years[picks(gw, user, 30)].mean() > cat.years[base].mean() + 3
    write_rules(gw, {"prefer": {"popularity_penalty": 4.0}})
    assert cat.log_pop[picks(gw, user, 30)].mean() < cat.log_pop[base].mean()
    write_rules(gw, {"prefer": {"popularity_penalty": -4.0}})
    assert cat.log_pop[picks(gw, user, 30)].mean() > cat.log_pop[base].mean()


def mean_pairwise_similarity(cat: Catalog, idx: list[int]) -> float:
    u = cat.unit[idx]
    s = u @ u.T
    return float((s.sum() - np.trace(s)) / (len(idx) * (len(idx) - 1)))


def test_mmr_lambda_trades_relevance_for_diversity(gw: Gateway, user: int) -> None:
    write_rules(gw, {"diversity": {"mmr_lambda": 1.0, "genre_cap": 100}})
    focused = recommend(gw, user, 20)
    write_rules(gw, {"diversity": {"mmr_lambda": 0.3, "genre_cap": 100}})
    diverse = recommend(gw, user, 20)
    idx = lambda r: [gw.catalog.index(i.movie_id) for i in r.items]  # noqa: E731
    assert mean_pairwise_similarity(gw.catalog, idx(diverse)) < mean_pairwise_similarity(gw.catalog, idx(focused))
    assert not any("diversity pick" in i.reasons for i in focused.items)
    assert any("diversity pick" in i.reasons for i in diverse.items)


def test_genre_cap(gw: Gateway, user: int) -> None:
    write_rules(gw, {"diversity": {"genre_cap": 2}})
    counts = Counter(g for i in picks(gw, user, 20) for g in gw.catalog.genres[i])
    assert max(counts.values()) <= 2


def test_promotions_are_boosted_and_capped(gw: Gateway, user: int) -> None:
    cat = gw.catalog
    base = set(picks(gw, user, 20))
    promoted = [int(cat.movie_ids[i]) for i in cat.popularity_order[-50:] if i not in base][:5]
    write_rules(gw, {"promotions": {"items": promoted, "boost": 50.0, "max_slots": 2}})
    items = recommend(gw, user, 20).items
    shown = [i for i in items if i.movie_id in promoted]
    assert len(shown) == 2 and all("promoted" in i.reasons for i in shown)
    write_rules(gw, {"promotions": {"items": promoted, "boost": 50.0, "max_slots": 0}})
    assert not {i.movie_id for i in recommend(gw, user, 20).items} & set(promoted)


def test_segments_pick_their_rule_sets(gw: Gateway, live_settings, runtime, user: int) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    write_user(client, runtime, 3, [(int(m), 4.0) for m in MOVIE_IDS[10:22]])  # 12 ratings: casual
    heavy_rules = {"avoid": {"exclude_genres": ["Drama"]}}
    write_rules(gw, segments={"casual_min_ratings": 5, "heavy_min_ratings": 10, "heavy": heavy_rules})
    heavy, new = recommend(gw, 3, 30), recommend(gw, user, 30)
    assert (heavy.segment, new.segment) == ("heavy", "new")
    assert not any("Drama" in i.genres for i in heavy.items) and any("Drama" in i.genres for i in new.items)


def test_hot_reload_without_restart_and_bad_files_keep_the_last_good_rules(gw: Gateway, user: int) -> None:
    first = recommend(gw, user, 10)
    loaded = write_rules(gw, {"avoid": {"exclude_genres": ["Drama"]}})
    second = recommend(gw, user, 10)
    assert second.rules_version == loaded.version != first.rules_version and second.cached is False
    gw.rules.path.write_text("base: {diversity: {mmr_lambda: 7}}\n")
    third = recommend(gw, user, 10)
    assert third.rules_version == loaded.version and "mmr_lambda" in (gw.rules.last_error or "")
    assert gw.health().rules.ok is False


def test_ab_bucketing_is_deterministic_and_follows_weights(gw: Gateway) -> None:
    arms = [("control", 70.0), ("diverse", 20.0), ("bold", 10.0)]
    first = [bucket(str(u), "salt-1", arms) for u in range(10_000)]
    assert first == [bucket(str(u), "salt-1", arms) for u in range(10_000)]
    counts = Counter(first)
    for name, weight in arms:
        assert abs(counts[name] / 10_000 - weight / 100) < 0.02, counts
    other_salt = [bucket(str(u), "salt-2", arms) for u in range(2_000)]
    assert other_salt != first[:2_000]


def test_variant_overrides_apply_and_are_reported(gw: Gateway, live_settings, runtime) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    arms = [{"name": "control", "weight": 1}, {"name": "no-drama", "weight": 1,
                                                   "overrides": {"avoid": {"exclude_genres": ["Drama"]}}}]  # fmt: skip
    loaded = write_rules(gw, variants={"salt": "v", "arms": arms})
    by_variant: dict[str, int] = {}
    for uid in itertools.count(100):
        by_variant.setdefault(loaded.variant_for(str(uid)), uid)
        if len(by_variant) == 2:
            break
    for uid in by_variant.values():
        write_user(client, runtime, uid, [(int(MOVIE_IDS[0]), 5.0)])
    control, nodrama = recommend(gw, by_variant["control"], 30), recommend(gw, by_variant["no-drama"], 30)
    assert (control.variant, nodrama.variant) == ("control", "no-drama")
    assert not any("Drama" in i.genres for i in nodrama.items) and any("Drama" in i.genres for i in control.items)
    assert gw.telemetry.by_variant["no-drama"] >= 1


@pytest.mark.parametrize(
    ("case", "redis_ok", "exists", "mu", "n_trending", "expected"),
    [
        (1, False, True, np.zeros(8, np.float32), 5, (Source.POPULARITY, True)),  # Rule 2 before all
        (2, True, False, None, 5, (Source.TRENDING, False)),  # Rule 3 + Rule 5
        (3, True, False, None, 0, (Source.POPULARITY, False)),  # Rule 3, no trending
        (4, True, True, np.zeros(4, np.float32), 5, (Source.TRENDING, False)),  # Rule 4: wrong size
        (5, True, True, np.full(8, np.nan, np.float32), 0, (Source.POPULARITY, False)),  # Rule 4: NaN
        (6, True, True, np.zeros(8, np.float32), 0, (Source.PERSONALISED, False)),
    ],
)
def test_decision_case_table(case, redis_ok, exists, mu, n_trending, expected) -> None:
    cold = is_cold_start(exists, mu, latent=8)
    assert choose_source(redis_ok=redis_ok, cold=cold, n_trending=n_trending) == expected
