"""Training at ML-32M width: the sampled softmax, candidate decoding and capped validation (models/training.py)."""

from __future__ import annotations

import numpy as np
import torch

from models.data import POSITIVE
from models.hybrid_vae import HybridVAE
from models.training import CandidateSampler, TrainingRows, rows_from_events, validation_batches
from models.vae import HybridVAEModule, SideFeatures
from tests.models_support import taste_data


def _rows(n_items: int, counts: np.ndarray) -> TrainingRows:
    items = np.repeat(np.arange(n_items), counts)
    ones = np.ones(len(items), np.float32)
    return TrainingRows(np.zeros(1, np.int64), np.array([0, len(items)]), items, ones, ones)


def test_sampled_normaliser_is_unbiased_for_the_full_softmax() -> None:
    """Oracle: Z = sum_j exp(o_j) over every trainable movie. The sampler's estimate, the exact sum over the
    batch's positives plus exp(o_s + shift_s) over the drawn columns, has mean Z (importance sampling)."""
    rng = np.random.default_rng(0)
    n = 500
    trainable = np.ones(n, bool)
    trainable[-20:] = False  # never drawn: outside the training softmax
    sampler = CandidateSampler(_rows(n, rng.integers(0, 50, n)), trainable, size=64)
    logits = rng.normal(0, 1.5, n)
    targets = np.array([3, 3, 10, 250])
    z = np.exp(logits[trainable]).sum()
    estimates = []
    for _ in range(4000):
        cand, shift, column = sampler.draw(targets, rng)
        assert trainable[cand].all()  # the drawn columns and the targets are all trainable
        np.testing.assert_array_equal(cand[column], targets)  # each target finds its own column
        estimates.append(np.exp(logits[cand] + shift).sum())
    mean, err = np.mean(estimates), np.std(estimates) / np.sqrt(len(estimates))
    assert abs(mean - z) < 4 * err + 1e-9 * z, (mean, z, err)


def test_candidate_logits_equal_the_full_logits_columns() -> None:
    data = taste_data()
    side = SideFeatures(data.item_side, torch.device("cpu"))
    module = HybridVAEModule(data.n_items, data.item_side.shape[1], 16, 8, generator=torch.Generator().manual_seed(1))
    items, offsets = torch.tensor([0, 2, 5, 2, 7]), torch.tensor([0, 3])
    weights = torch.tensor([1.0, 0.5, -1.0, 0.3, 1.0])
    cand = np.array([7, 1, 4, 20])
    with torch.no_grad():
        full, mu, _ = module(side, items, offsets, weights, sample=False)
        part, mu2, _ = module(side, items, offsets, weights, sample=False, candidates=cand)
    torch.testing.assert_close(mu2, mu, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(part, full[:, torch.from_numpy(cand)], atol=1e-6, rtol=1e-5)


def test_validation_rows_are_capped_and_chunked() -> None:
    rows = rows_from_events(taste_data().history)
    every = validation_batches(rows, torch.device("cpu"), cuts_per_user=2, chunk=7)
    capped = validation_batches(rows, torch.device("cpu"), cuts_per_user=2, max_rows=10, chunk=7)
    assert sum(b.size for b in every) == sum(
        min(2, int(((rows.target[s:e] > 0)[1:]).sum())) for s, e in zip(rows.indptr[:-1], rows.indptr[1:], strict=True)
    )
    assert all(b.size <= 7 for b in every)
    assert sum(b.size for b in capped) <= 10


def test_a_sampled_softmax_still_learns_the_taste() -> None:
    """With 8 negatives of 30 movies per batch the model still ranks a user's genre above the other."""
    data = taste_data()
    model = HybridVAE(hidden=16, latent=8, max_epochs=60, lr=0.02, batch_size=16, val_fraction=0.0, seed=3,
                      sampled_softmax=8, seq_gamma=0.0, prior_beta=0.0).fit(data)  # fmt: skip
    h = data.history
    wins = 0
    users = np.unique(h.user)
    for u in users:
        state = model.new_state()
        mine = h.item[(h.user == u) & (h.rating >= POSITIVE)]
        for i, r in zip(h.item[h.user == u], h.rating[h.user == u], strict=True):
            state = model.learn_one(state, int(i), float(r))
        scores = model.score_one(state)
        genre = data.item_side[mine].toarray().sum(axis=0).argmax()
        same = np.flatnonzero(data.item_side[:, genre].toarray().ravel() > 0)
        other = np.setdiff1d(np.arange(data.n_items - 2), same)
        wins += scores[same].mean() > scores[other].mean()
    assert wins >= 0.9 * len(users)
