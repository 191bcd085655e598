"""The hybrid VAE's streaming item prior: decayed counts like the worker's trending zset, in model and runtime."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest

from models.evaluation.prequential import prequential
from models.hybrid_vae import HybridVAE
from models.runtime import ModelRuntime, decayed_log_counts
from models.state import encode
from models.tuning import validation_split
from reelstream.errors import ModelError
from tests.models_support import taste_data

TINY = dict(
    hidden=16, latent=8, max_epochs=30, lr=0.02, batch_size=16, val_fraction=0.0, prior_beta=0.0, seq_gamma=0.0, seed=3
)  # the prior alone: the co-rating term is tested in test_models_sequence.py
DAY = 86400.0


@pytest.fixture(scope="module")
def data():
    return taste_data()


@pytest.fixture(scope="module")
def model(data) -> HybridVAE:
    return HybridVAE(**TINY).fit(data)


def _zset(events: list[tuple[int, float]], n: int, half_life_s: float) -> np.ndarray:
    """The trending zset as the worker's Lua script builds it: ZADD logaddexp(old, d * ts)."""
    z = np.full(n, -np.inf)
    for item, ts in events:
        x = math.log(2.0) / half_life_s * ts  # streams/processor.py: x = decay * ts
        cur = z[item]
        top = max(cur, x)
        z[item] = x if cur == -np.inf else top + math.log(math.exp(cur - top) + math.exp(x - top))
    return z


def test_decayed_counts_halve_every_half_life() -> None:
    hl = 7 * DAY
    z = _zset([(0, 0.0), (0, 0.0), (1, 7 * DAY), (2, 14 * DAY)], 4, hl)
    counts = np.expm1(decayed_log_counts(z, 14 * DAY, hl))
    np.testing.assert_allclose(counts, [0.5, 0.5, 1.0, 0.0], atol=1e-9)


def test_cold_user_follows_recent_popularity_when_beta_is_large(model: HybridVAE, data) -> None:
    m = copy.deepcopy(model).set_item_prior(1000.0, 7.0, data.history)
    now = float(data.history.ts.max())
    # 100 days on, HISTORY has decayed away; item 5 gets 3 fresh events, item 12 two, item 20 one
    for item, n in ((5, 3), (12, 2), (20, 1)):
        for _ in range(n):
            m.observe(item, 2.0, None, ts=now + 100 * DAY)
    top = np.argsort(-m.score_one(m.new_state()), kind="stable")[:3]
    assert top.tolist() == [5, 12, 20]


def test_prior_beta_zero_is_the_plain_decoder(model: HybridVAE, data) -> None:
    state = model.learn_one(model.new_state(), 0, 5.0)
    mu, _ = encode(model.runtime_.weights, state)
    plain = model.runtime_.scores(mu)
    np.testing.assert_array_equal(model.score_one(state), plain)  # the fixture has prior_beta 0
    z = np.zeros(model.runtime_.n_items)
    np.testing.assert_array_equal(model.runtime_.scores(mu, z, 0.0), plain)  # beta 0 ignores trending


def test_runtime_scores_with_the_zset_equal_the_model(model: HybridVAE, data, tmp_path: Path) -> None:
    m = copy.deepcopy(model).set_item_prior(0.7, 3.0, data.history)
    for i, r, t in zip(data.stream.item, data.stream.rating, data.stream.ts, strict=True):
        m.observe(int(i), float(r), None, ts=float(t))
    m.save(tmp_path / "m")
    runtime = ModelRuntime.load(tmp_path / "m")
    assert runtime.item_prior == {"beta": 0.7, "half_life_s": 3 * DAY}
    ev = [(int(i), float(t)) for i, t in zip(np.r_[data.history.item, data.stream.item],
                                             np.r_[data.history.ts, data.stream.ts], strict=True)]  # fmt: skip
    zset = _zset(ev, runtime.n_items, 3 * DAY)
    state = m.learn_one(m.learn_one(m.new_state(), 1, 5.0), 2, 4.0)
    mu, _ = encode(runtime.weights, state)
    np.testing.assert_allclose(runtime.scores(mu, zset, m.now_), m.score_one(state), atol=1e-4)
    assert not np.allclose(runtime.scores(mu), m.score_one(state))
    with pytest.raises(ModelError, match="half-life"):
        runtime.prior_logits(zset, m.now_, half_life_s=7 * DAY)
    with pytest.raises(ModelError, match="now_s"):
        runtime.scores(mu, zset)


def test_prior_leaves_fold_in_exact(model: HybridVAE, data) -> None:
    m = copy.deepcopy(model).set_item_prior(1.0, 7.0, data.history)
    a, b = model.new_state(), m.new_state()
    for item, rating in ((0, 5.0), (3, 4.0), (7, 2.0), (3, 1.0)):
        a, b = model.learn_one(a, item, rating), m.learn_one(b, item, rating)
        m.observe(item, rating, None, ts=float(data.history.ts.max()) + 1.0)
    np.testing.assert_allclose(encode(m.runtime_.weights, b)[0], encode(model.runtime_.weights, a)[0], atol=1e-5)
    np.testing.assert_array_equal(b.pre, a.pre)


def test_streaming_walk_counts_stream_events_static_does_not(model: HybridVAE, data) -> None:
    m = copy.deepcopy(model).set_item_prior(1.0, 7.0, data.history)
    before = m.trending_.copy()
    prequential(m, data, streaming=False)
    np.testing.assert_array_equal(m.trending_, before)
    prequential(m, data, streaming=True)
    touched = np.unique(data.stream.item)
    assert (m.trending_[touched] > before[touched]).all()
    assert m.now_ == float(data.stream.ts.max())


def test_validation_split_uses_history_only(data) -> None:
    val = validation_split(data, 0.8)
    assert len(val.history) + len(val.stream) == len(data.history)
    assert val.stream.ts.max() <= data.history.ts.max() and val.history.ts.max() < val.stream.ts.min()
