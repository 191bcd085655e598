"""The co-rating component (models/sequence.py), the batched validation walk and the self-configuring search.

Oracles are written from the documented formulas (the module docstrings), not from the code: co-rating counts
by enumerating pairs, the latest-movies order by sorting (event time, movie id), the batched walk against
the one-event-at-a-time prequential walk.
"""

from __future__ import annotations

import copy
import math
from itertools import combinations

import numpy as np
import pytest

from models.data import Events
from models.evaluation.batched import ScoringWalk, WalkSetting
from models.evaluation.prequential import prequential
from models.hybrid_vae import HybridVAE
from models.sequence import CoRatedItems, push_recent, recent_items
from models.tuning import LADDERS, POPULARITY, Ladder, self_configure, validation_split
from tests.models_support import taste_data

TINY = dict(hidden=16, latent=8, max_epochs=20, lr=0.02, batch_size=16, val_fraction=0.0, seed=3)


def _oracle_similarity(users, items, ratings, n_items: int, window: int) -> np.ndarray:
    """C[a, b] += 1/d for every pair d <= window apart in a user's time order with b liked; then cosine."""
    c = np.zeros((n_items, n_items))
    for u in set(users):
        seq = [(i, r) for uu, i, r in zip(users, items, ratings, strict=True) if uu == u]
        for (p, (a, ra)), (q, (b, rb)) in combinations(enumerate(seq), 2):
            d = q - p
            if d > window or a == b:
                continue
            if rb >= 4.0:
                c[a, b] += 1.0 / d
            if ra >= 4.0:
                c[b, a] += 1.0 / d
    rows, cols = c.sum(axis=1), c.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(c > 0, c / np.sqrt(np.outer(rows, cols)), 0.0)
    return s


def test_co_rating_similarities_follow_the_documented_counts() -> None:
    rng = np.random.default_rng(4)
    n_items, n = 12, 300
    users = np.sort(rng.integers(0, 15, n))
    items = rng.integers(0, n_items, n)
    ratings = rng.choice([1.0, 3.0, 4.0, 5.0], n).astype(np.float32)
    ev = Events(users.astype(np.int32), items.astype(np.int32), ratings, np.arange(n))
    co = CoRatedItems.build(ev, n_items, window=3, top_k=n_items)
    got = np.zeros((n_items, n_items))
    for a in range(n_items):
        s, e = co.indptr[a], co.indptr[a + 1]
        got[a, co.indices[s:e]] = co.data[s:e]
    want = _oracle_similarity(users.tolist(), items.tolist(), ratings.tolist(), n_items, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert co.tau == pytest.approx(float(np.median(want[want > 0])), rel=1e-5)
    # top-k keeps each row's k largest
    top2 = CoRatedItems.build(ev, n_items, window=3, top_k=2)
    for a in range(n_items):
        s, e = top2.indptr[a], top2.indptr[a + 1]
        assert e - s == min(2, int((want[a] > 0).sum()))
        if e > s:
            assert np.sort(top2.data[s:e])[::-1] == pytest.approx(np.sort(want[a])[::-1][: e - s], rel=1e-5)


def test_logits_are_gamma_log1p_of_decayed_neighbour_sums() -> None:
    ev = Events(np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 2, 2, 1, 3]), np.full(6, 5.0, np.float32),
                np.arange(6))  # fmt: skip
    co = CoRatedItems.build(ev, 4, window=2, top_k=4)
    dense = np.zeros((4, 4))
    for a in range(4):
        dense[a, co.indices[co.indptr[a] : co.indptr[a + 1]]] = co.data[co.indptr[a] : co.indptr[a + 1]]
    got = co.logits([2, 0], decay=0.5, gamma=1.5, n=6)
    v = dense[2] + 0.5 * dense[0]
    want = np.concatenate([1.5 * np.log1p(v / co.tau), [0.0, 0.0]])
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_latest_movies_kept_by_fold_in_equal_the_rated_hash_order() -> None:
    """push_recent over events in (time, movie) order == recent_items of the rated map {movie: (r, ts)}."""
    rng = np.random.default_rng(0)
    ts = np.sort(rng.integers(0, 40, 200))  # many ties
    movies = rng.integers(0, 30, 200)
    order = np.lexsort((movies, ts))
    recent: tuple[int, ...] = ()
    rated: dict[int, tuple[float, int]] = {}
    for t, m in zip(ts[order].tolist(), movies[order].tolist(), strict=True):
        recent = push_recent(recent, m, 7)
        rated[m] = (4.0, t)
        oracle = [mid for mid, _ in sorted(rated.items(), key=lambda kv: (-kv[1][1], -kv[0]))][:7]
        assert list(recent) == oracle == recent_items(rated, None, 7)


@pytest.fixture(scope="module")
def data():
    return taste_data(n_users=60, n_items=30, seed=2)


@pytest.fixture(scope="module")
def fitted(data) -> HybridVAE:
    return HybridVAE(**TINY).fit(data)


@pytest.mark.parametrize(
    "setting",
    [
        WalkSetting(0.0, 7.0, 0.0, 0.7, 10, 3),
        WalkSetting(1.0, 0.01, 0.0, 0.7, 10, 3),
        WalkSetting(0.5, 30.0, 2.0, 0.5, 3, 2),
    ],
)
def test_batched_walk_equals_the_prequential_walk(data, fitted: HybridVAE, setting: WalkSetting) -> None:
    model = copy.deepcopy(fitted)
    model.set_item_prior(setting.prior_beta, setting.prior_half_life_days, data.history)
    model.set_sequence(setting.seq_gamma, setting.seq_decay, setting.seq_length, setting.seq_window, 100,
                       data.history)  # fmt: skip
    walked = prequential(model, data, streaming=True).groups
    batched = ScoringWalk(fitted.runtime_, data).score(setting)
    for g in ("overall", "warm", "cold"):
        assert batched[g]["events"] == walked[g]["events"]
        for m in ("hr", "ndcg", "mrr"):
            assert batched[g][m] == pytest.approx(walked[g][m], abs=1e-6), (g, m)


def test_self_configure_chooses_a_checked_local_optimum(data) -> None:
    ladders = {
        "prior_beta": Ladder((0.0, 0.5, 1.0), grow=2.0),
        "prior_half_life_days": Ladder((0.001, 0.01), grow=10.0, shrink=10.0, floor=1e-4),
        "seq_gamma": Ladder((0.0, 1.0), grow=2.0),
        "seq_decay": Ladder((0.5, 0.8)),
        "seq_length": Ladder((2.0, 5.0), grow=2.0, integer=True, cap=10.0),
        "seq_window": Ladder((1.0, 2.0), grow=2.0, integer=True, cap=8.0),
    }
    params = {**TINY, "prior_half_life_days": 0.01, "seq_length": 5, "seq_window": 2, "seq_gamma": 1.0,
              "seq_decay": 0.5, "prior_beta": 0.5}  # fmt: skip
    cfg = self_configure(params, data, ladders=ladders, baselines=False)
    names = list(ladders)
    scored = {tuple(t[k] for k in names): t["groups"]["overall"]["hr"] for t in cfg.trials}
    chosen = tuple(cfg.chosen[k] for k in names)
    assert scored[chosen] == cfg.hr
    assert {t["vae"] for t in cfg.trials} == {True}  # the hybrid's trials; popularity is a baseline
    for j, name in enumerate(names):  # every neighbour of the choice along one axis was scored and is not better
        neighbours = [key for key in scored if all(key[i] == chosen[i] for i in range(len(names)) if i != j)]
        assert all(scored[key] <= cfg.hr for key in neighbours)
        if cfg.interior[name] == "interior":
            assert any(key[j] < chosen[j] for key in neighbours) and any(key[j] > chosen[j] for key in neighbours)
        else:  # a bound: nothing beyond it on that side may exist
            assert cfg.interior[name] == f"bound {chosen[j]:g}"
    walk = ScoringWalk(HybridVAE(**TINY).fit(validation_split(data)).runtime_, validation_split(data))
    assert cfg.events == walk.events
    # the popularity baseline: decayed counts alone on the same walk, at the half-life it was tuned to
    pop = cfg.baselines[POPULARITY]
    hl = cfg.popularity_half_life_days
    assert pop == walk.score(WalkSetting(1.0, hl, 0.0, 0.5, 1, 1, vae=False))
    for other in [v for v in (hl * 10.0, hl / 10.0) if v >= 1e-4]:  # its ladder's neighbours (floor 1e-4)
        assert walk.score(WalkSetting(1.0, other, 0.0, 0.5, 1, 1, vae=False))["overall"]["hr"] <= pop["overall"]["hr"]


def test_ladders_widen_open_ends_only() -> None:
    beta = LADDERS["prior_beta"]
    assert beta.widened([0.0, 1.0, 2.0], at_top=True) == 3.0 and beta.widened([0.0, 1.0], at_top=False) is None
    hl = LADDERS["prior_half_life_days"]
    assert hl.widened([7.0, 30.0], at_top=False) == 1.75 and hl.widened([0.3], at_top=False) is None
    length = LADDERS["seq_length"]
    assert length.widened([40.0], at_top=True) == 80.0 and length.widened([80.0], at_top=True) is None
    assert LADDERS["seq_decay"].widened([0.3, 0.95], at_top=True) is None
    assert math.isclose(LADDERS["seq_window"].widened([5.0, 8.0], at_top=True), 13.0)


def test_retrains_runtime_adapter_scores_what_the_model_scores(data, fitted: HybridVAE) -> None:
    """retrain judges the serving champion through RuntimeLearner: it must rank as the model does."""
    from models.continual import RuntimeLearner

    model = copy.deepcopy(fitted).set_sequence(2.0, 0.5, 4, 2, 100, data.history)
    adapter = RuntimeLearner(model.runtime_, data.movie_ids).fit(data)
    a, b = model.new_state(), adapter.new_state()
    for item, rating in ((0, 5.0), (3, 4.0), (7, 2.0), (12, 5.0), (3, 1.0)):
        a, b = model.learn_one(a, item, rating), adapter.learn_one(b, item, rating)
    assert a.recent == b.recent
    np.testing.assert_allclose(adapter.score_one(b), model.score_one(a), atol=1e-5)


def test_a_bounded_walk_scores_every_stride_th_candidate(data, fitted: HybridVAE) -> None:
    full = ScoringWalk(fitted.runtime_, data)
    bounded = ScoringWalk(fitted.runtime_, data, max_events=10)
    positives = int((data.stream.rating >= 4.0).sum())
    assert bounded.stride == math.ceil(positives / 10) > 1
    np.testing.assert_array_equal(bounded.targets, full.targets[:: bounded.stride])
    np.testing.assert_array_equal(bounded.mu, full.mu[:: bounded.stride])
    assert bounded.score(WalkSetting(1.0, 7.0, 1.0, 0.7, 5, 2))["overall"]["events"] == len(bounded.targets)


def test_co_rating_counts_do_not_depend_on_the_block_bounds() -> None:
    """Tiny blocks (one movie, a few pairs: the sorted-keys path) and one big block (the dense path) give the
    same neighbours as the oracle: the bounded-memory counting changes nothing but memory."""
    rng = np.random.default_rng(7)
    n_items, n = 30, 2000
    users = np.sort(rng.integers(0, 40, n))
    items = rng.integers(0, n_items, n)
    ratings = rng.choice([2.0, 3.0, 4.0, 4.5, 5.0], n).astype(np.float32)
    ev = Events(users.astype(np.int32), items.astype(np.int32), ratings, np.arange(n))
    want = _oracle_similarity(users.tolist(), items.tolist(), ratings.tolist(), n_items, 4)
    for bounds in ({"block_bytes": 1, "block_pairs": 1}, {"block_bytes": 1 << 30, "block_pairs": 1 << 30}):
        co = CoRatedItems.build(ev, n_items, window=4, top_k=5, **bounds)
        for a in range(n_items):
            s, e = co.indptr[a], co.indptr[a + 1]
            assert e - s == min(5, int((want[a] > 0).sum()))
            top = np.sort(want[a])[::-1][: e - s]
            np.testing.assert_allclose(np.sort(co.data[s:e])[::-1], top, rtol=1e-5)
            # ties broken towards the lower movie index, as documented
            assert all(want[a, j] >= top[-1] - 1e-12 for j in co.indices[s:e])


def test_a_fold_in_only_load_leaves_out_the_co_rating_table_and_folds_in_alike(tmp_path) -> None:
    """``ModelRuntime.load(scoring=False)`` (the stream worker's): no ``sequence``, the same fold-in and encoding."""
    from models.runtime import ModelRuntime
    from models.state import cold_state, fold_in

    rt = ModelRuntime.random(np.arange(1, 13), seed=2)
    ev = Events(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]), np.full(4, 4.0, np.float32), np.arange(4))
    rt.sequence = CoRatedItems.build(ev, rt.n_items, window=2, top_k=4)
    rt.save(tmp_path / "m")
    full, lean = ModelRuntime.load(tmp_path / "m"), ModelRuntime.load(tmp_path / "m", scoring=False)
    assert full.sequence is not None and lean.sequence is None
    state = fold_in(full.weights, cold_state(full.weights), 3, 4.5, None)
    again = fold_in(lean.weights, cold_state(lean.weights), 3, 4.5, None)
    np.testing.assert_array_equal(state.pre, again.pre)
