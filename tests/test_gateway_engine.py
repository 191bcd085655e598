"""The MMR selection (gateway/engine.py) picks exactly what the plain greedy loop picks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.catalog import Catalog
from gateway.engine import Pick, select
from gateway.rules import RuleSet
from models.runtime import ModelRuntime
from tests.user_state import synthetic_items

IDS = np.arange(1, 1201) * 5
CATALOG = Catalog.build(ModelRuntime.random(IDS, hidden=16, latent=8, seed=21), synthetic_items(IDS.tolist(), seed=9))


def plain_mmr(cat: Catalog, pool: np.ndarray, relevance: np.ndarray, k: int, rules: RuleSet) -> list[Pick]:
    """The textbook loop: every step scores every eligible item afresh."""
    lam, cap = rules.diversity.mmr_lambda, rules.diversity.genre_cap
    lo, hi = float(relevance.min()), float(relevance.max())
    rel = (relevance - lo) / (hi - lo) if hi > lo else np.ones_like(relevance)
    unit = cat.unit[pool]
    has_genre = cat.genre_matrix[pool] > 0
    promoted = np.isin(cat.movie_ids[pool], np.array(sorted(rules.promotions.items) or [-1]))
    eligible = np.ones(pool.size, dtype=bool)
    if rules.promotions.max_slots == 0:
        eligible &= ~promoted
    max_sim = np.zeros(pool.size, dtype=np.float32)
    genre_counts = np.zeros(has_genre.shape[1], dtype=np.int64)
    picks: list[Pick] = []
    for step in range(min(k, pool.size)):
        mmr = rel if step == 0 else lam * rel - (1.0 - lam) * max_sim
        masked = np.where(eligible, mmr, -np.inf)
        j = int(masked.argmax())
        if not math.isfinite(masked[j]):
            break
        best = int(np.where(eligible, rel, -np.inf).argmax())
        picks.append(Pick(int(pool[j]), float(relevance[j]), bool(promoted[j]), j != best))
        eligible[j] = False
        genre_counts += has_genre[j]
        eligible &= ~has_genre[:, genre_counts >= cap].any(axis=1)
        if sum(p.promoted for p in picks) >= rules.promotions.max_slots:
            eligible &= ~promoted
        max_sim = np.maximum(max_sim, unit @ unit[j])
    return picks


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lam", [0.0, 0.3, 0.85, 1.0])
@pytest.mark.parametrize(("cap", "slots"), [(1000, 2), (2, 0), (3, 1)])
def test_select_equals_the_plain_greedy_loop(seed: int, lam: float, cap: int, slots: int) -> None:
    rng = np.random.default_rng(seed)
    pool = rng.choice(CATALOG.n, size=300, replace=False)
    relevance = rng.normal(0.0, 1.0, pool.size).astype(np.float32)
    relevance[:20] = relevance[20:40]  # ties in relevance too
    rules = RuleSet.model_validate({
        "diversity": {"mmr_lambda": lam, "genre_cap": cap},
        "promotions": {"items": [int(m) for m in CATALOG.movie_ids[pool[rng.choice(pool.size, 15)]]],
                       "max_slots": slots},
    })  # fmt: skip
    got = select(CATALOG, pool, relevance, 25, rules)
    assert got == plain_mmr(CATALOG, pool, relevance, 25, rules)
    assert len({p.index for p in got}) == len(got) and sum(p.promoted for p in got) <= slots


def test_select_stops_when_nothing_is_eligible() -> None:
    pool = np.arange(10)
    rules = RuleSet.model_validate({"diversity": {"genre_cap": 1}})
    relevance = np.linspace(0, 1, 10, dtype=np.float32)
    got = select(CATALOG, pool, relevance, 10, rules)
    assert 0 < len(got) < 10  # every genre capped at one pick before ten
    assert got == plain_mmr(CATALOG, pool, relevance, 10, rules)
