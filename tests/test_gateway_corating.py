"""The gateway serves the co-rating term of the evaluated model, from the rated hash the worker writes."""

from __future__ import annotations

import numpy as np

from gateway.catalog import Catalog
from gateway.corating import CoRatingTerm
from gateway.engine import personal_scores
from gateway.rules import RulesStore
from gateway.service import Gateway
from gateway.state import RedisState
from models.data import Events
from models.runtime import ModelRuntime
from models.sequence import CoRatedItems, push_recent
from models.state import cold_state, encode, fold_in
from reelstream.settings import Settings
from tests.gateway_support import recommend
from tests.user_state import synthetic_items, write_user

IDS = np.arange(1, 301) * 7


def _runtime(gamma: float) -> ModelRuntime:
    """A random model whose co-rating neighbours are hand-made: (0, 1), (2, 3), (4, 5) rated together."""
    rt = ModelRuntime.random(IDS, hidden=16, latent=8, seed=3)
    pairs = [(0, 1), (2, 3), (4, 5)] * 5
    users = np.repeat(np.arange(len(pairs)), 2)
    items = np.array([i for p in pairs for i in p])
    ev = Events(users.astype(np.int32), items.astype(np.int32), np.full(len(items), 5.0, np.float32),
                np.arange(len(items)))  # fmt: skip
    rt.sequence = CoRatedItems.build(ev, rt.n_items, window=1, top_k=10)
    rt.metadata["sequence"] = {"gamma": gamma, "decay": 0.5, "length": 2}
    return rt


def _gateway(settings: Settings, runtime: ModelRuntime) -> Gateway:
    s = settings.model_copy(update={"gateway_cache_size": 0})
    catalog = Catalog.build(runtime, synthetic_items(IDS.tolist(), seed=2))
    return Gateway(s, catalog, RulesStore(s.rules_path), RedisState(s.redis_url), corating=CoRatingTerm(runtime))


def test_the_latest_rating_brings_its_co_rated_movie_first(live_settings: Settings, rclient) -> None:
    runtime = _runtime(gamma=50.0)  # the term dominates: the neighbour of the latest movie leads
    g = _gateway(live_settings, runtime)
    write_user(rclient, runtime, 5, [(int(IDS[0]), 5.0), (int(IDS[2]), 5.0)], ts0=1_000)
    assert recommend(g, 5, 3).items[0].movie_id == IDS[3]  # latest is movie 2 -> its neighbour 3
    write_user(rclient, runtime, 5, [(int(IDS[4]), 4.0)], ts0=2_000)
    top = [it.movie_id for it in recommend(g, 5, 3).items]
    assert top[0] == IDS[5] and IDS[3] in top  # 4 is newest (weight 1), 2 next (0.5); 0 is beyond length 2
    assert IDS[1] not in top[:2]


def test_served_logits_equal_the_models_scores(live_settings: Settings, rclient) -> None:
    runtime = _runtime(gamma=1.5)
    g = _gateway(live_settings, runtime)
    rated = [(int(IDS[i]), r) for i, r in ((10, 5.0), (0, 4.0), (20, 2.0), (2, 5.0))]
    write_user(rclient, runtime, 6, rated, ts0=5_000)
    snap = g.state.user(6, details=False)
    seq = g.coratings[runtime.version].logits(g.catalog.index_of, g.catalog.n, snap.rated_at)
    served = personal_scores(g.catalog, snap.mu, None, None, seq)
    # the model's own path: fold in, keep the latest movies, decode + the co-rating term
    state, recent = cold_state(runtime.weights), ()
    for mid, r in rated:
        state = fold_in(runtime.weights, state, runtime.item_index(mid), r)
        recent = push_recent(recent, runtime.item_index(mid), 2)
    mu, _ = encode(runtime.weights, state)
    model = runtime.scores(mu) + runtime.sequence.logits(list(recent), decay=0.5, gamma=1.5)
    assert np.array_equal(np.argsort(-served, kind="stable"), np.argsort(-model, kind="stable"))
    np.testing.assert_allclose((model - model.mean()) / model.std(), served, atol=5e-3)


def test_a_model_without_the_component_adds_nothing() -> None:
    rt = ModelRuntime.random(IDS, seed=1)
    assert not CoRatingTerm(rt).enabled and CoRatingTerm(rt).logits({}, rt.n_items, {7: 1}) is None
