"""ItemKNN: item-item cosine over HISTORY positives, top-K neighbours per movie (sparse)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np
import scipy.sparse as sp

from models.artifacts import load_arrays, save_arrays
from models.base import Recommender
from models.data import POSITIVE, Interactions
from models.decayed_counts import DecayedItemCounts, with_prior

__all__ = ["ItemKNN", "cosine_top_k"]

#: Rows of the item-item block computed at once: the dense block is ``_BLOCK x n_items`` float32.
_BLOCK = 512


def cosine_top_k(X: sp.csr_matrix, k: int, shrinkage: float = 0.0) -> sp.csr_matrix:
    """CSR float32 [n_items, n_items]: row ``i`` keeps the ``k`` largest ``sim(i, j)``, ``j != i``.

    ``sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrinkage)`` over the binary user x item ``X``
    (cosine with shrinkage, Sarwar et al. 2001; Koren 2008). Rows are computed ``_BLOCK`` movies at a
    time, so memory is ``O(_BLOCK * n_items + n_items * k)``, never a dense item x item matrix. Equal
    similarities at the cut-off go to the lower index; zero similarities are never kept.
    """
    X = sp.csr_matrix(X, dtype=np.float32)
    X.data[:] = 1.0
    n = X.shape[1]
    Xc = X.tocsc()
    norms = np.sqrt(np.asarray(Xc.sum(axis=0)).ravel()).astype(np.float32)
    XT = Xc.T.tocsr()
    rows, cols, vals = [], [], []
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        co = (XT[lo:hi] @ X).toarray()  # co-counts [hi - lo, n]
        denom = norms[lo:hi, None] * norms[None, :] + np.float32(shrinkage)
        with np.errstate(invalid="ignore", divide="ignore"):
            sim = np.where(denom > 0, co / denom, 0.0).astype(np.float32)
        sim[np.arange(hi - lo), np.arange(lo, hi)] = 0.0
        kk = min(k, n - 1)
        if kk <= 0:
            continue
        keep = _top_k_mask(sim, kk) & (sim > 0)
        r, c = np.nonzero(keep)
        rows.append(r + lo)
        cols.append(c)
        vals.append(sim[r, c])
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n),
                         dtype=np.float32)  # fmt: skip


def _top_k_mask(sim: np.ndarray, k: int) -> np.ndarray:
    """bool mask of the ``k`` largest entries per row, ties at the cut-off to the lower column.

    ``argpartition`` picks the top ``k`` in linear time but breaks ties at the cut-off arbitrarily; the
    few rows where a tie straddles the cut-off (at a non-zero value) are redone exactly.

    >>> _top_k_mask(np.array([[0.1, 0.5, 0.5, 0.5, 0.9]]), 3).tolist()
    [[False, True, True, False, True]]
    """
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    mask = np.zeros(sim.shape, dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    kth = np.take_along_axis(sim, idx, axis=1).min(axis=1)
    at = sim == kth[:, None]
    straddle = np.flatnonzero((at.sum(axis=1) > (at & mask).sum(axis=1)) & (kth > 0))
    for r in straddle.tolist():
        ties = np.flatnonzero(at[r])
        room = k - int((sim[r] > kth[r]).sum())
        mask[r, ties] = False
        mask[r, ties[:room]] = True
    return mask


class ItemKNN(Recommender):
    """Neighbourhood yardstick: a user's scores are the summed neighbour rows of their positives.

    ``S = cosine_top_k(X, k, shrinkage)`` over the HISTORY positives ``X``; a user's state is
    ``x_u S`` (float32 [n_items]), so folding in a positive adds one sparse row of ``S`` (exact, as
    EASE's fold-in). Scores get ``tie_break`` times the normalised popularity, so a user with no
    positives gets the popularity list, and optionally the hybrid VAE's streaming item prior
    (:func:`models.decayed_counts.with_prior`).

    Parameters
    ----------
    k
        Neighbours kept per movie.
    shrinkage
        Added to the cosine's denominator: pairs with few common users count less.
    threshold
        Ratings at or above this are positives.
    tie_break
        Weight of the normalised popularity added to every score.
    prior_beta, prior_half_life_days
        The streaming item prior, as in :class:`models.ease.EASE` (``prior_beta=0``: none).

    Attributes
    ----------
    S_
        CSR float32 [n_items, n_items], row ``i`` = the top-``k`` neighbours of movie ``i``.

    References
    ----------
    Badrul Sarwar, George Karypis, Joseph Konstan, John Riedl. Item-based collaborative filtering
    recommendation algorithms. WWW 2001.

    Examples
    --------
    >>> from models.data import Events, Interactions
    >>> ev = Events(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 2]), np.full(4, 5.0, np.float32), np.arange(4))
    >>> data = Interactions(ev, ev.select(np.zeros(4, bool)), 2, 3, sp.csr_matrix((3, 1), dtype=np.float32),
    ...                     ["x"], np.array([1, 2, 3]), [[], [], []])
    >>> model = ItemKNN(k=5, tie_break=0.0).fit(data)
    >>> [round(float(s), 3) for s in model.score_one(model.learn_one(model.new_state(), 0, 5.0))]
    [0.0, 0.707, 0.707]
    """

    def __init__(
        self,
        k: int = 100,
        shrinkage: float = 0.0,
        threshold: float = POSITIVE,
        tie_break: float = 1e-6,
        prior_beta: float = 0.0,
        prior_half_life_days: float = 365.0,
    ) -> None:
        self.k = k
        self.shrinkage = shrinkage
        self.threshold = threshold
        self.tie_break = tie_break
        self.prior_beta = prior_beta
        self.prior_half_life_days = prior_half_life_days

    def fit(self, data: Interactions) -> Self:
        X = data.history_matrix(lambda r: (r >= self.threshold).astype(np.float32))
        self.S_ = cosine_top_k(X, self.k, self.shrinkage)
        counts = np.asarray(X.sum(axis=0)).ravel()
        self.popularity_ = (counts / max(float(counts.max()), 1.0)).astype(np.float32)
        self.known_ = counts > 0
        self.counts_ = DecayedItemCounts(data.n_items, self.prior_half_life_days).prime(data.history)
        return self

    def new_state(self) -> np.ndarray:
        return np.zeros(self.S_.shape[0], dtype=np.float32)

    def learn_one(
        self, state: np.ndarray, item: int, rating: float, previous_rating: float | None = None
    ) -> np.ndarray:
        delta = float(rating >= self.threshold) - float(
            previous_rating is not None and previous_rating >= self.threshold
        )
        start, end = self.S_.indptr[item], self.S_.indptr[item + 1]
        if delta == 0.0 or start == end:
            return state
        out = state.copy()
        out[self.S_.indices[start:end]] += np.float32(delta) * self.S_.data[start:end]
        return out

    def observe(self, item: int, rating: float, previous_rating: float | None = None, ts: float | None = None) -> None:
        """Count the event in the item prior (any rating); without a prior nothing is kept."""
        if self.prior_beta != 0.0:
            self.counts_.observe(item, ts)

    def score_one(self, state: np.ndarray) -> np.ndarray:
        ties = self.tie_break * self.popularity_
        if self.prior_beta == 0.0:
            return state + ties
        return with_prior(state, self.known_, self.counts_.log1p_counts(), self.prior_beta) + ties

    def save(self, folder: Path) -> None:
        self._write_params(folder, "ItemKNN")
        S = self.S_
        save_arrays(folder / "itemknn.npz", data=S.data, indices=S.indices, indptr=S.indptr,
                    popularity=self.popularity_, counts=self.counts_.trending,
                    counts_now=np.array(self.counts_.now))  # fmt: skip

    @classmethod
    def load(cls, folder: Path) -> Self:
        model = cls._from_params(folder, "ItemKNN")
        a = load_arrays(folder / "itemknn.npz", ("data", "indices", "indptr", "popularity", "counts", "counts_now"))
        n = len(a["popularity"])
        model.S_ = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=(n, n))
        model.popularity_ = a["popularity"]
        model.known_ = model.popularity_ > 0
        model.counts_ = DecayedItemCounts(n, model.prior_half_life_days)
        model.counts_.trending[:] = a["counts"]
        model.counts_.now = float(a["counts_now"])
        return model
