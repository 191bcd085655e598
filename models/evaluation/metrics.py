"""Ranking metrics on one ranked list; each takes 1-based ranks so hand-made cases read easily.

>>> hit_rate(3, 20), round(ndcg(3, 20), 4), reciprocal_rank(3, 100)
(1.0, 0.5, 0.3333333333333333)
>>> hit_rate(21, 20), ndcg(21, 20), reciprocal_rank(101, 100)
(0.0, 0.0, 0.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["genre_diversity", "hit_rate", "ndcg", "rank_of", "reciprocal_rank", "top_k"]


def rank_of(scores: np.ndarray, candidates: np.ndarray, target: int) -> int:
    """1-based rank of ``target`` among ``candidates`` (bool mask), ties broken by lower index first.

    >>> rank_of(np.array([0.5, 0.9, 0.5, 0.1]), np.array([True, True, True, True]), 2)
    3
    >>> rank_of(np.array([0.5, 0.9, 0.5, 0.1]), np.array([True, False, True, True]), 2)
    2
    """
    s = scores[target]
    above = np.count_nonzero(candidates & (scores > s))
    tied_before = np.count_nonzero(candidates[:target] & (scores[:target] == s))
    return int(1 + above + tied_before)


def top_k(scores: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best candidates, best first, ties broken by lower index (as :func:`rank_of`).

    >>> top_k(np.array([0.5, 0.9, 0.5, 0.1]), np.array([True, True, True, False]), 2).tolist()
    [1, 0]
    """
    idx = np.flatnonzero(candidates)
    if len(idx) > k:
        part = np.argpartition(-scores[idx], k - 1)[:k]
        cutoff = scores[idx[part]].min()
        idx = idx[scores[idx] >= cutoff]  # keep every tie at the cut-off, then sort
    order = np.lexsort((idx, -scores[idx]))
    return idx[order][:k]


def hit_rate(rank: int, k: int) -> float:
    return 1.0 if rank <= k else 0.0


def ndcg(rank: int, k: int) -> float:
    """NDCG@k of one relevant item (its ideal DCG is 1)."""
    return float(1.0 / np.log2(rank + 1)) if rank <= k else 0.0


def reciprocal_rank(rank: int, k: int) -> float:
    return 1.0 / rank if rank <= k else 0.0


def genre_diversity(items: np.ndarray, genre_matrix: np.ndarray) -> float:
    """Mean pairwise Jaccard distance of the items' genre sets (0: all alike, 1: all disjoint).

    >>> g = np.array([[1, 0], [1, 0], [0, 1]], dtype=bool)
    >>> round(genre_diversity(np.array([0, 1, 2]), g), 4)
    0.6667
    """
    n = len(items)
    if n < 2:
        return 0.0
    g = genre_matrix[items].astype(np.float32)
    inter = g @ g.T
    sizes = g.sum(axis=1)
    union = sizes[:, None] + sizes[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = np.where(union > 0, 1.0 - inter / union, 0.0)
    return float(dist[np.triu_indices(n, 1)].mean())
