"""EASE (Steck 2019): a closed-form item-item linear model, the yardstick to beat."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np

from models.artifacts import load_arrays, save_arrays
from models.base import Recommender
from models.data import POSITIVE, Interactions
from models.decayed_counts import DecayedItemCounts, with_prior

__all__ = ["EASE"]


class EASE(Recommender):
    """Embarrassingly Shallow AutoEncoder: ``scores = x_u B`` with a zero-diagonal ``B`` in closed form.

    ``B = I - P diagMat(1 / diag(P))`` with ``P = (X^T X + lambda I)^-1`` over the
    movies with at least one positive in HISTORY. A user's state is their score
    vector, so folding in a positive adds one row of ``B`` (O(n_items), exact).
    Scores of users with equal ``x_u B`` are broken by popularity
    (``tie_break`` times the normalised count), so a user with no positives gets
    the popularity list rather than an arbitrary order.

    Parameters
    ----------
    l2
        The ridge penalty ``lambda``.
    threshold
        Ratings at or above this are positives (the interaction vector).
    tie_break
        Weight of the normalised popularity added to every score.
    prior_beta, prior_half_life_days
        The hybrid VAE's streaming item prior (:mod:`models.decayed_counts`): the scores, scaled to unit
        spread per user, get ``prior_beta * log(1 + c_i)`` added, ``c_i`` the decayed count of rating
        events on movie ``i``; :meth:`observe` keeps the counts, :meth:`fit` starts them from HISTORY.
        ``prior_beta=0`` (the default) is plain EASE.

    Attributes
    ----------
    items_
        int64 [m], the item indices ``B`` covers.
    B_
        float32 [m, m], the item-item weights.

    References
    ----------
    Harald Steck. Embarrassingly Shallow Autoencoders for Sparse Data. WWW 2019.

    Examples
    --------
    >>> from models.data import Events, Interactions
    >>> import scipy.sparse as sp
    >>> ev = Events(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 2]), np.full(5, 5.0, np.float32),
    ...             np.arange(5))
    >>> data = Interactions(ev, ev.select(np.zeros(5, bool)), 3, 3, sp.csr_matrix((3, 1), dtype=np.float32),
    ...                     ["x"], np.array([1, 2, 3]), [[], [], []])
    >>> model = EASE(l2=1.0, tie_break=0.0).fit(data)
    >>> state = model.learn_one(model.new_state(), 0, 5.0)
    >>> [round(float(s), 3) for s in model.score_one(state)]
    [0.0, 0.667, 0.0]
    """

    def __init__(
        self,
        l2: float = 200.0,
        threshold: float = POSITIVE,
        tie_break: float = 1e-6,
        prior_beta: float = 0.0,
        prior_half_life_days: float = 365.0,
    ) -> None:
        self.l2 = l2
        self.threshold = threshold
        self.tie_break = tie_break
        self.prior_beta = prior_beta
        self.prior_half_life_days = prior_half_life_days

    def fit(self, data: Interactions) -> Self:
        X = data.history_matrix()
        counts = np.asarray(X.sum(axis=0)).ravel()
        self.n_items_ = data.n_items
        self.items_ = np.flatnonzero(counts > 0).astype(np.int64)
        Xs = X[:, self.items_]
        G = (Xs.T @ Xs).toarray().astype(np.float64)
        G[np.diag_indices_from(G)] += self.l2
        P = np.linalg.inv(G)
        B = -P / np.diag(P)[None, :]
        B[np.diag_indices_from(B)] = 0.0
        self.B_ = B.astype(np.float32)
        prior = np.zeros(data.n_items, dtype=np.float32)
        prior[self.items_] = counts[self.items_] / max(counts.max(), 1.0)
        self.prior_ = prior
        self._build_index()
        self.counts_ = DecayedItemCounts(data.n_items, self.prior_half_life_days).prime(data.history)
        return self

    def _build_index(self) -> None:
        self.pos_of_ = np.full(self.n_items_, -1, dtype=np.int64)
        self.pos_of_[self.items_] = np.arange(len(self.items_))

    def new_state(self) -> np.ndarray:
        return np.zeros(len(self.items_), dtype=np.float32)

    def learn_one(
        self, state: np.ndarray, item: int, rating: float, previous_rating: float | None = None
    ) -> np.ndarray:
        delta = float(rating >= self.threshold) - float(
            previous_rating is not None and previous_rating >= self.threshold
        )
        pos = self.pos_of_[item]
        if delta == 0.0 or pos < 0:
            return state
        return state + delta * self.B_[pos]

    def observe(self, item: int, rating: float, previous_rating: float | None = None, ts: float | None = None) -> None:
        """Count the event in the item prior (any rating); without a prior nothing is kept."""
        counts = getattr(self, "counts_", None)
        if self.prior_beta != 0.0 and counts is not None:
            counts.observe(item, ts)

    def score_one(self, state: np.ndarray) -> np.ndarray:
        counts = getattr(self, "counts_", None)
        if self.prior_beta == 0.0 or counts is None:
            scores = self.tie_break * self.prior_
            scores[self.items_] += state
            return scores
        raw = np.zeros(self.n_items_, dtype=np.float32)
        raw[self.items_] = state
        return with_prior(raw, self.pos_of_ >= 0, counts.log1p_counts(), self.prior_beta) + self.tie_break * self.prior_

    def save(self, folder: Path) -> None:
        self._write_params(folder, "EASE")
        save_arrays(folder / "ease.npz", B=self.B_, items=self.items_, prior=self.prior_,
                    n_items=np.array(self.n_items_), counts=self.counts_.trending,
                    counts_now=np.array(self.counts_.now))  # fmt: skip

    @classmethod
    def load(cls, folder: Path) -> Self:
        model = cls._from_params(folder, "EASE")
        arrays = load_arrays(folder / "ease.npz", ("B", "items", "prior", "n_items", "counts", "counts_now"))
        model.B_, model.items_, model.prior_ = arrays["B"], arrays["items"], arrays["prior"]
        model.n_items_ = int(arrays["n_items"])
        model.counts_ = DecayedItemCounts(model.n_items_, model.prior_half_life_days)
        model.counts_.trending[:] = arrays["counts"]
        model.counts_.now = float(arrays["counts_now"])
        model._build_index()
        return model
