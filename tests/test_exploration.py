"""Exploration arms (models/exploration.py): the draw's distribution, UCB by hand, determinism under a seed."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from models.evaluation.prequential import prequential
from models.exploration import (
    Exploring,
    draw_rng,
    explore_scores,
    logit_std,
    posterior_sigma,
    thompson_latent,
)
from models.hybrid_vae import HybridVAE
from models.state import encode
from reelstream.errors import ModelError
from tests.models_support import taste_data

TINY = dict(hidden=16, latent=8, max_epochs=30, lr=0.02, batch_size=16, val_fraction=0.0, prior_beta=1.0, seed=3)


@pytest.fixture(scope="module")
def data():
    return taste_data()


@pytest.fixture(scope="module")
def vae(data) -> HybridVAE:
    return HybridVAE(**TINY).fit(data)


def test_thompson_draws_have_the_posterior_mean_and_variance() -> None:
    mu = np.array([0.5, -1.0, 2.0], np.float32)
    logvar = np.array([0.0, math.log(0.25), math.log(4.0)], np.float32)
    scale = 0.5
    n = 6000
    draws = np.stack([thompson_latent(mu, logvar, draw_rng(9, u, 1), scale) for u in range(n)])
    # oracle: z ~ N(mu, (scale * sigma)^2), sigma = sqrt(variance) = 1, 0.5, 2
    want_sd = np.array([scale * 1.0, scale * 0.5, scale * 2.0])
    assert np.all(np.abs(draws.mean(axis=0) - mu) < 5 * want_sd / math.sqrt(n))
    assert np.allclose(draws.std(axis=0), want_sd, rtol=0.06)
    # independent coordinates
    corr = np.corrcoef(draws.T)
    assert np.all(np.abs(corr[np.triu_indices(3, 1)]) < 0.06)


def test_thompson_logits_spread_as_the_ucb_standard_deviation() -> None:
    rng = np.random.default_rng(4)
    decoder = rng.standard_normal((5, 3)).astype(np.float32)
    mu = rng.standard_normal(3).astype(np.float32)
    logvar = np.array([-1.0, 0.3, 0.0], np.float32)
    exploit = (decoder @ mu).astype(np.float32)
    n = 5000
    sampled = np.stack(
        [explore_scores(exploit, decoder, mu, logvar, "thompson", 1.0, draw_rng(2, i)) for i in range(n)]
    )
    # oracle: logit_i = sum_k W_ik z_k has variance sum_k W_ik^2 exp(logvar_k), written out by hand
    sd = [math.sqrt(sum(float(decoder[i, k]) ** 2 * math.exp(float(logvar[k])) for k in range(3))) for i in range(5)]
    assert np.allclose(sampled.std(axis=0), sd, rtol=0.06)
    assert np.all(np.abs(sampled.mean(axis=0) - exploit) < 5 * np.array(sd) / math.sqrt(n))
    assert np.allclose(logit_std(decoder * decoder, logvar), sd, rtol=1e-5)


def test_ucb_against_a_hand_computed_example() -> None:
    decoder = np.array([[1.0, 2.0], [0.0, -3.0]], np.float32)
    logvar = np.log(np.array([4.0, 1.0], np.float32))  # sigma^2 = 4, 1
    exploit = np.array([0.5, 0.1], np.float32)
    # item 0: sqrt(1*4 + 4*1) = sqrt(8); item 1: sqrt(0 + 9*1) = 3; bonus 0.5 * std
    got = explore_scores(exploit, decoder, np.zeros(2, np.float32), logvar, "ucb", 0.5)
    assert got == pytest.approx([0.5 + 0.5 * math.sqrt(8.0), 0.1 + 1.5], abs=1e-6)
    assert exploit.tolist() == pytest.approx([0.5, 0.1])  # not modified
    assert posterior_sigma(logvar).tolist() == pytest.approx([2.0, 1.0])


def test_an_unknown_kind_or_a_missing_generator_is_refused(vae: HybridVAE) -> None:
    z = np.zeros(2, np.float32)
    with pytest.raises(ModelError, match="unknown exploration kind 'epsilon'"):
        explore_scores(z, np.eye(2, dtype=np.float32), z, z, "epsilon", 1.0)
    with pytest.raises(ModelError, match="needs a Generator"):
        explore_scores(z, np.eye(2, dtype=np.float32), z, z, "thompson", 1.0)
    with pytest.raises(ModelError, match="unknown exploration kind"):
        Exploring(vae, kind="greedy")
    with pytest.raises(ModelError, match="scale must be"):
        Exploring(vae, scale=-1.0)


def test_thompson_scores_are_the_exploit_ones_at_a_drawn_latent(vae: HybridVAE, data) -> None:
    state = vae.learn_one(vae.new_state(), 0, 5.0)
    arm = Exploring(vae, "thompson", scale=1.0, seed=5)
    got = arm.score_one(state)
    mu, logvar = encode(vae.runtime_.weights, state)
    z = thompson_latent(mu, logvar, draw_rng(5, 0), 1.0)  # the first call's draw
    # same decoder, bias and item prior as exploit: score_one(state) - decoder @ mu + decoder @ z
    prior = vae.score_one(state) - vae.runtime_.scores(mu)
    assert np.abs(prior).max() > 0  # the prior is on (prior_beta 1)
    assert np.allclose(got, vae.runtime_.scores(z) + prior, atol=1e-4)
    assert not np.allclose(got, vae.score_one(state), atol=1e-3)


def test_exploration_is_deterministic_under_a_seed(vae: HybridVAE, data) -> None:
    def walk(kind: str, scale: float, seed: int) -> np.ndarray:
        arm = Exploring(copy.deepcopy(vae), kind, scale=scale, seed=seed)
        return prequential(arm, data, streaming=True).ranks

    exploit = prequential(copy.deepcopy(vae), data, streaming=True).ranks
    first, again, other = walk("thompson", 2.0, 1), walk("thompson", 2.0, 1), walk("thompson", 2.0, 2)
    assert len(first) >= 5
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, exploit)
    assert np.array_equal(walk("thompson", 0.0, 1), exploit)  # scale 0: the exploit list
    assert np.array_equal(walk("ucb", 0.0, 1), exploit)
    assert np.array_equal(walk("ucb", 3.0, 1), walk("ucb", 3.0, 7))  # UCB draws nothing: no seed dependence


def test_clone_restarts_the_draws_and_learning_is_delegated(vae: HybridVAE) -> None:
    arm = Exploring(vae, "thompson", scale=1.0, seed=3)
    state = arm.learn_one(arm.new_state(), 1, 5.0)
    assert state.n_events == vae.learn_one(vae.new_state(), 1, 5.0).n_events == 1
    first, second = arm.score_one(state), arm.score_one(state)
    assert not np.array_equal(first, second)  # one draw per list
    fresh = copy.deepcopy(arm)
    fresh.draws_ = 0
    assert np.array_equal(fresh.score_one(state), first)
    assert repr(arm.clone()).startswith("Exploring(model=HybridVAE(")


def test_save_and_load_round_trip(vae: HybridVAE, tmp_path) -> None:
    arm = Exploring(vae, "ucb", scale=0.7, seed=2)
    arm.save(tmp_path / "arm")
    back = Exploring.load(tmp_path / "arm")
    state = vae.learn_one(vae.new_state(), 3, 4.0)
    assert (back.kind, back.scale, back.seed) == ("ucb", 0.7, 2)
    assert np.allclose(back.score_one(state), arm.score_one(state), atol=1e-5)
    (tmp_path / "arm" / "params.json").write_text('{"learner": "EASE"}')
    with pytest.raises(ModelError, match="not Exploring"):
        Exploring.load(tmp_path / "arm")
