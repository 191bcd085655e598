"""Candidate retrieval on a large catalogue: an inverted-file index over the decoder rows, then exact scores.

Exact scoring reads every decoder row on every uncached request: at ML-32M shape 87,585 x 64 float32 =
22 MB, about a millisecond of one core's memory bandwidth, the largest single cost of a request. The
index groups the rows into k-means lists (``faiss.Kmeans``, trained once per model) stored contiguously.
A request:

1. takes the score moments (mean, standard deviation) from the same strided sample of rows that
   :func:`gateway.engine.personal_scores` uses, so the standardised scores mean what they mean on the
   exact path;
2. ranks the lists by an optimistic bound, ``centroid . mu + max over the list of (bias + prior)
   + s * max over the list of the rule set's adjustment`` (``s``: the user's score standard deviation,
   the unit of the adjustment);
3. reads the best ``probe`` share of the lists and scores their rows exactly in logit space,
   ``decoder . mu + bias + prior + s * adjustment``, which orders items as the exact path's total does;
4. keeps the best ``pool + avoided + margin`` of them (rated items are avoided afterwards, so the pool
   after that still holds ``pool`` of the best), plus every item the co-rating term touches.

The caller re-scores these candidates exactly (:meth:`gateway.recommender.Recommending.recommend`). What the index
cannot see falls back to exact scoring there: requests with ``genres=`` or ``exclude_genres=`` and UCB
exploration. The pool's recall against the exact top-``pool`` and the served HR@20 approximate vs exact are
measured in ``bench/retrieval.py`` (``bench/results/retrieval.json``); ``tests/test_gateway_retrieval.py``
checks the recall on a model trained on the bundled data.

An index is immutable and tied to one catalogue version; new rows (announced movies) go to their nearest
list without retraining (:meth:`ItemIndex.extended`). The per-item additive terms change with the prior's
generation and the rule set; their permuted copies and per-list maxima are cached per key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ItemIndex", "sample_stride"]


#: Rows read per candidate returned, at least (recall needs the probed lists to hold far more rows than the
#: candidates kept: measured in bench/results/retrieval.json).
ROWS_PER_CANDIDATE = 8


def sample_stride(n: int) -> int:
    """The stride of the rows the score moments are taken from (the exact path's, engine.personal_scores)."""
    return max(1, n // 8192)


@dataclass
class ItemIndex:
    """k-means lists over a catalogue's decoder rows (see the module docstring)."""

    version: str  #: the catalogue version it was built for
    centroids: np.ndarray  #: float32 [lists, latent]
    order: np.ndarray  #: int64 [n]: catalogue index of each permuted row
    starts: np.ndarray  #: int64 [lists + 1]: list j holds permuted rows starts[j]:starts[j + 1]
    rows: np.ndarray  #: float32 [n, latent], decoder rows in list order (contiguous)
    probe: float  #: share of the lists read per request
    sample: np.ndarray  #: int64: the catalogue indices the score moments come from (every stride-th)
    sample_rows: np.ndarray  #: float32 [len(sample), latent], their decoder rows (contiguous)
    position: np.ndarray  #: int64 [n]: the permuted row of each catalogue index (``order``'s inverse)
    _terms: dict[object, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, version: str, decoder: np.ndarray, *, lists: int | None = None, probe: float = 0.125,
              seed: int = 0, iterations: int = 20) -> ItemIndex:  # fmt: skip
        """Train ``lists`` k-means centroids (default about sqrt(n)) on the rows and group the rows by them."""
        import faiss

        rows = np.ascontiguousarray(decoder, dtype=np.float32)
        n, d = rows.shape
        lists = max(1, min(n, lists or round(np.sqrt(n))))
        km = faiss.Kmeans(d, lists, niter=iterations, seed=seed, verbose=False)
        km.train(rows)
        centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
        return cls._grouped(version, centroids, rows, probe)

    @classmethod
    def _grouped(cls, version: str, centroids: np.ndarray, rows: np.ndarray, probe: float) -> ItemIndex:
        assign = _nearest(centroids, rows)
        order = np.argsort(assign, kind="stable")
        starts = np.searchsorted(assign[order], np.arange(centroids.shape[0] + 1)).astype(np.int64)
        sample = np.arange(0, rows.shape[0], sample_stride(rows.shape[0]), dtype=np.int64)
        position = np.empty_like(order)
        position[order] = np.arange(order.shape[0])
        return cls(version, centroids, order.astype(np.int64), starts, np.ascontiguousarray(rows[order]), probe,
                   sample, np.ascontiguousarray(rows[sample]), position.astype(np.int64))  # fmt: skip

    def extended(self, version: str, decoder: np.ndarray) -> ItemIndex:
        """The index of a catalogue that grew or changed rows: same centroids, rows regrouped (no training)."""
        return self._grouped(version, self.centroids, np.ascontiguousarray(decoder, dtype=np.float32), self.probe)

    @property
    def n(self) -> int:
        return int(self.order.shape[0])

    def _permuted(self, key: object, make: Callable[[], np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
        """(the values ``make()`` gives, in list order; their finite maximum per list), cached per ``key``."""
        hit = self._terms.get(key)
        if hit is not None:
            return hit
        values = make()
        if values is None:
            perm = np.zeros(self.n, dtype=np.float32)
        else:
            perm = np.ascontiguousarray(values[self.order], dtype=np.float32)
        top = np.full(self.centroids.shape[0], -np.inf, dtype=np.float32)
        filled = np.flatnonzero(self.starts[1:] > self.starts[:-1])
        if filled.size:
            finite = np.where(np.isfinite(perm), perm, np.float32(-np.inf))
            top[filled] = np.maximum.reduceat(finite, self.starts[filled])
        with self._lock:
            if len(self._terms) > 32:  # prior generations and rule sets come and go
                self._terms.clear()
            self._terms[key] = (perm, top)
        return perm, top

    def retrieve(self, latent: np.ndarray, std: float, size: int, *,
                 offset: tuple[object, Callable[[], np.ndarray | None]],
                 adjust: tuple[object, Callable[[], np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The ``size`` best rows by ``rows . latent + offset + std * adjust`` among the probed lists, as
        (catalogue indices, their ``rows . latent``), unordered, -inf left out.

        ``offset`` and ``adjust`` are ``(cache key, a function giving the values over the catalogue)``: the
        logit-space additive term (bias + prior) and the rule set's adjustment in standard deviations;
        ``std`` is the user's score standard deviation.
        """
        off, off_top = self._permuted(("offset", offset[0]), offset[1])
        adj, adj_top = self._permuted(("adjust", adjust[0]), adjust[1])
        s = np.float32(std)
        bound = self.centroids @ latent + off_top + s * adj_top
        best = self._probed(bound, size)
        starts, ends = self.starts[best], self.starts[best + 1]
        lens = ends - starts
        if not lens.sum():
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        picked = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        # one mat-vec per list, on contiguous slices: no gathered copy of the rows
        dots = np.concatenate([self.rows[a:b] @ latent for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])
        scores = dots + off[picked]
        scores += s * adj[picked]
        if size < picked.size:
            top = np.argpartition(-scores, size - 1)[:size]
            picked, scores, dots = picked[top], scores[top], dots[top]
        finite = np.isfinite(scores)
        return self.order[picked[finite]], dots[finite]

    def _probed(self, bound: np.ndarray, size: int) -> np.ndarray:
        """The lists to read, best bound first: the ``probe`` share of them, and more until they hold at least
        :data:`ROWS_PER_CANDIDATE` rows per candidate wanted (a small catalogue, or a user who rated many)."""
        order = np.argsort(-bound, kind="stable")
        rows = np.cumsum((self.starts[1:] - self.starts[:-1])[order])
        by_share = int(np.ceil(self.probe * order.shape[0]))
        by_rows = int(np.searchsorted(rows, min(ROWS_PER_CANDIDATE * size, int(rows[-1])))) + 1
        return order[: max(1, by_share, by_rows)]

    def dots(self, items: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """``decoder[items] . latent`` from the index's item-major rows (a fast row gather)."""
        return self.rows[self.position[items]] @ latent


def _nearest(centroids: np.ndarray, rows: np.ndarray, block: int = 16_384) -> np.ndarray:
    """The nearest centroid (L2) of each row, in blocks (bounded memory)."""
    c2 = np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty(rows.shape[0], dtype=np.int64)
    for a in range(0, rows.shape[0], block):
        part = rows[a : a + block]
        out[a : a + block] = np.argmin(c2[None, :] - 2.0 * (part @ centroids.T), axis=1)
    return out
