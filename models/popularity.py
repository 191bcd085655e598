"""Most-popular baseline: everyone gets the movies with the most positive ratings."""

from __future__ import annotations

from pathlib import Path
from typing import Self

import numpy as np

from models.artifacts import load_arrays, save_arrays
from models.base import Recommender
from models.data import POSITIVE, Interactions

__all__ = ["Popularity"]


class Popularity(Recommender):
    """Rank movies by their number of positive ratings; the same list for every user.

    Used as the fallback when no personal model is loaded, and as the yardstick
    for cold users. In the STREAMING flavour, :meth:`observe` keeps the counts
    current.

    Parameters
    ----------
    threshold
        A rating at or above this counts (the default counts positives only).

    Attributes
    ----------
    counts_
        float64 [n_items], the current count per movie.

    Examples
    --------
    >>> from models.data import Events, Interactions
    >>> import scipy.sparse as sp
    >>> ev = Events(np.array([0, 1, 1]), np.array([2, 2, 0]), np.array([5.0, 4.0, 4.5], np.float32),
    ...             np.array([1, 2, 3]))
    >>> empty = ev.select(np.zeros(3, bool))
    >>> data = Interactions(ev, empty, 2, 3, sp.csr_matrix((3, 1), dtype=np.float32), ["x"],
    ...                     np.array([10, 20, 30]), [[], [], []])
    >>> model = Popularity().fit(data)
    >>> model.score_one(model.new_state()).tolist()
    [1.0, 0.0, 2.0]
    """

    def __init__(self, threshold: float = POSITIVE) -> None:
        self.threshold = threshold

    def fit(self, data: Interactions) -> Self:
        h = data.history
        good = h.rating >= self.threshold
        self.counts_ = np.bincount(h.item[good], minlength=data.n_items).astype(np.float64)
        return self

    def new_state(self) -> None:
        return None

    def learn_one(self, state: None, item: int, rating: float, previous_rating: float | None = None) -> None:
        return None

    def observe(self, item: int, rating: float, previous_rating: float | None = None, ts: float | None = None) -> None:
        was = previous_rating is not None and previous_rating >= self.threshold
        self.counts_[item] += float(rating >= self.threshold) - float(was)

    def score_one(self, state: None) -> np.ndarray:
        return self.counts_.astype(np.float32)

    def save(self, folder: Path) -> None:
        self._write_params(folder, "Popularity")
        save_arrays(folder / "popularity.npz", counts=self.counts_)

    @classmethod
    def load(cls, folder: Path) -> Self:
        model = cls._from_params(folder, "Popularity")
        model.counts_ = load_arrays(folder / "popularity.npz", ("counts",))["counts"].astype(np.float64)
        return model
