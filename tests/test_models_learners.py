"""Shared checks every learner in ``models/`` passes (river's ``check_estimator`` idea)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.base import Recommender
from models.ease import EASE
from models.hybrid_vae import HybridVAE
from models.popularity import Popularity
from tests.models_support import taste_data

LEARNERS: dict[str, Callable[[], Recommender]] = {
    "popularity": lambda: Popularity(),
    "ease": lambda: EASE(l2=10.0),
    "hybrid_vae": lambda: HybridVAE(hidden=16, latent=8, max_epochs=3, val_fraction=0.2, seed=1),
}


@pytest.fixture(scope="module")
def data():
    return taste_data()


@pytest.fixture(scope="module", params=sorted(LEARNERS))
def fitted(request: pytest.FixtureRequest, data) -> Recommender:
    return LEARNERS[request.param]().fit(data)


def test_learn_then_score(fitted: Recommender, data) -> None:
    state = fitted.new_state()
    for item, rating in ((0, 5.0), (1, 2.0), (0, 4.0)):
        state = fitted.learn_one(state, item, rating, None if item == 1 or rating == 5.0 else 5.0)
    scores = fitted.score_one(state)
    assert scores.shape == (data.n_items,) and scores.dtype == np.float32 and np.isfinite(scores).all()
    fitted.observe(2, 5.0)  # global updates accept any event


def test_clone_is_fresh_with_the_same_parameters(fitted: Recommender) -> None:
    clone = fitted.clone()
    assert type(clone) is type(fitted) and repr(clone) == repr(fitted)
    assert clone._get_params() == fitted._get_params()
    assert not any(name.endswith("_") and not name.startswith("_") for name in vars(clone))


def test_save_load_round_trip(fitted: Recommender, data, tmp_path: Path) -> None:
    fitted.save(tmp_path / "model")
    loaded = type(fitted).load(tmp_path / "model")
    state_a, state_b = fitted.new_state(), loaded.new_state()
    for item in (0, 4, 7):
        state_a, state_b = fitted.learn_one(state_a, item, 5.0), loaded.learn_one(state_b, item, 5.0)
    np.testing.assert_allclose(loaded.score_one(state_b), fitted.score_one(state_a), atol=1e-6)
    assert repr(loaded) == repr(fitted)


def test_states_from_replays_history(fitted: Recommender, data) -> None:
    states = fitted.states_from(data.history)
    assert set(states) == set(np.unique(data.history.user).tolist())
