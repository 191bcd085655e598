"""The hybrid's item-neighbour component: movies rated close together in a user's history.

MovieLens users rate in sessions, and what they rate next is close to what they rated last, far more than
a user-level taste vector says. :class:`CoRatedItems` keeps, for every movie ``a``, its ``top_k`` nearest
movies ``b`` by **co-rating within a window**: over every user's ratings in time order, each pair at most
``window`` positions apart, where ``b`` is a positive (>= 4 stars) and ``a`` any rating, adds ``1 / distance``
to ``C[a, b]`` (both directions). The counts are cosine-normalised,
``S[a, b] = C[a, b] / sqrt(C[a, :].sum() * C[:, b].sum())``, and only the ``top_k`` largest per row are kept,
as CSR arrays: at most ``n_items * top_k`` entries, so 87,585 movies cost about 8.8 M entries, never a dense
item x item matrix.

A user's term is computed from their ``length`` most recently rated distinct movies ``r_0`` (newest),
``r_1``, ...: ``v = sum_k decay**k * S[r_k, :]`` and

    logit_b += gamma * log(1 + v_b / tau)

with ``tau`` the median stored similarity (so ``gamma`` means the same on any data). The state is that list
of recent movies: one rating moves one movie to its front, so fold-in stays exact and O(1), and the worker
already stores what it needs (``rs:user:{uid}:rated`` holds every movie's latest rating and event time;
:func:`recent_items` orders them).

>>> import numpy as np
>>> from models.data import Events
>>> # two users rate 0 then 1 (both liked): 0 and 1 become neighbours; 2 is rated alone
>>> ev = Events(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 2]), np.full(5, 5.0, np.float32), np.arange(5))
>>> co = CoRatedItems.build(ev, 3, window=2, top_k=5)
>>> logits = co.logits([0], decay=0.5, gamma=1.0)
>>> bool(logits[1] > 0.0), float(logits[2])
(True, 0.0)
"""

from __future__ import annotations

import heapq
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data import POSITIVE, Events
from reelstream.errors import ModelError

__all__ = ["CoRatedItems", "push_recent", "recent_items"]


@dataclass(frozen=True)
class CoRatedItems:
    """Top-k co-rating similarities as CSR arrays over the model's item index (see the module docstring)."""

    indptr: np.ndarray  #: int64 [n_items + 1]
    indices: np.ndarray  #: int32 [nnz]
    data: np.ndarray  #: float32 [nnz], the cosine-normalised co-rating weight
    tau: float  #: the median of ``data``: the scale ``v`` is measured in
    window: int
    top_k: int

    @property
    def n_items(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @classmethod
    def build(cls, events: Events, n_items: int, *, window: int = 3, top_k: int = 100,
              block_bytes: int = 256 << 20, block_pairs: int = 16_000_000) -> CoRatedItems:  # fmt: skip
        """Count co-ratings in ``events`` (time order, as :class:`~models.data.Events` are kept).

        Memory stays bounded at any scale (ML-32M: 25.6 M ratings, window 21 is 1 G pairs): rows are counted
        a block of movies at a time, into a dense ``block x n_items`` float64 accumulator of at most
        ``block_bytes``, from the block's rating positions and their neighbours at distance ``1..window``
        (at most ``block_pairs`` pairs a block); only each row's ``top_k`` survive a block. The column sums
        the cosine needs are one pass over the distances first.
        """
        if window < 1 or top_k < 1:
            raise ModelError(f"co-rating window and top_k must be >= 1, not {window} and {top_k}")
        order = np.argsort(events.user, kind="stable")  # by user; stable keeps time order within a user
        user, item, liked = events.user[order], events.item[order].astype(np.int64), events.rating[order] >= POSITIVE
        n = len(item)
        # C[a, b] += 1/d for each pair of ratings d <= window apart in one user's sequence, a at p, b at q, b liked
        col_sum = np.zeros(n_items)
        for d in range(1, window + 1):
            ok = (user[d:] == user[:-d]) & (item[d:] != item[:-d])
            early, late = item[:-d][ok], item[d:][ok]
            col_sum += np.bincount(late[liked[d:][ok]], minlength=n_items) / d
            col_sum += np.bincount(early[liked[:-d][ok]], minlength=n_items) / d
        by_item = np.argsort(item, kind="stable")  # rating positions grouped by movie
        per_item = np.bincount(item, minlength=n_items)
        starts = np.concatenate([[0], np.cumsum(per_item)])
        max_rows = max(1, block_bytes // (8 * max(n_items, 1)))
        max_pos = max(1, block_pairs // (2 * window))
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        lo = 0
        while lo < n_items:
            hi = lo + 1  # grow the block while it fits both bounds (one movie always fits)
            while hi < n_items and hi - lo < max_rows and starts[hi + 1] - starts[lo] <= max_pos:
                hi += 1
            parts.append(_block_top_k(by_item[starts[lo] : starts[hi]], user, item, liked, n, lo, hi, n_items,
                                      window, top_k, col_sum))  # fmt: skip
            lo = hi
        row = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        col = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        weight = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
        return cls._top_k(row, col, weight, n_items, window, top_k)

    @classmethod
    def _top_k(cls, row: np.ndarray, col: np.ndarray, weight: np.ndarray, n_items: int, window: int,
               top_k: int) -> CoRatedItems:  # fmt: skip
        order = np.lexsort((col, -weight, row))  # by row, then heaviest first (ties: lower column)
        row, col, weight = row[order], col[order], weight[order]
        starts = np.searchsorted(row, np.arange(n_items))
        rank = np.arange(len(row)) - starts[row]
        keep = rank < top_k
        row, col, weight = row[keep], col[keep], weight[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=n_items))]).astype(np.int64)
        data = weight.astype(np.float32)
        tau = float(np.median(data)) if len(data) else 1.0
        return cls(indptr, col.astype(np.int32), data, tau, window, top_k)

    def logits(self, recent: Sequence[int], *, decay: float, gamma: float, n: int | None = None) -> np.ndarray:
        """float32 [n or n_items]: ``gamma * log(1 + v / tau)`` for the recent items ``recent`` (newest first).

        ``n`` pads the vector with zeros for a serving catalogue longer than the model (announced movies);
        an index beyond the model's items (such a movie) adds nothing.
        """
        out = np.zeros(self.n_items if n is None else max(n, self.n_items), dtype=np.float32)
        cols, values = self.touched(recent, decay=decay, gamma=gamma)
        out[cols] = values
        return out

    def touched(self, recent: Sequence[int], *, decay: float, gamma: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`logits`' nonzero entries only, as (sorted item indices, float32 values): at most
        ``len(recent) x top_k`` of them, whatever the catalogue size (what candidate retrieval needs)."""
        rows = np.asarray(list(recent), dtype=np.int64)
        if gamma == 0.0 or not len(rows):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        weight = np.power(np.float32(decay), np.arange(len(rows), dtype=np.float32))
        keep = (rows >= 0) & (rows < self.n_items)  # a movie the model has no row for adds nothing
        rows, weight = rows[keep], weight[keep]
        starts, lens = self.indptr[rows], self.indptr[rows + 1] - self.indptr[rows]
        take = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        cols, inverse = np.unique(self.indices[take], return_inverse=True)
        v = np.bincount(inverse, weights=np.repeat(weight, lens) * self.data[take]).astype(np.float32)
        return cols.astype(np.int64), np.float32(gamma) * np.log1p(v * np.float32(1.0 / self.tau))

    # --- persistence ----------------------------------------------------------------------
    def save(self, path: Path) -> None:
        np.savez(path, indptr=self.indptr, indices=self.indices, data=self.data, tau=np.float64(self.tau),
                 window=np.int64(self.window), top_k=np.int64(self.top_k))  # fmt: skip

    @classmethod
    def load(cls, path: Path, n_items: int) -> CoRatedItems | None:
        """``sequence.npz``, None when absent (a model without the component); ModelError when corrupt."""
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as a:
                co = cls(a["indptr"].astype(np.int64, copy=False), a["indices"].astype(np.int32, copy=False),
                         a["data"].astype(np.float32, copy=False),
                         float(a["tau"]), int(a["window"]), int(a["top_k"]))  # fmt: skip
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ModelError(f"{path}: corrupt artifact ({exc})") from None
        if co.n_items != n_items or len(co.indices) != len(co.data) or co.indptr[-1] != len(co.data):
            raise ModelError(f"{path}: corrupt artifact, {co.n_items} rows for {n_items} movies")
        if len(co.indices) and (co.indices.min() < 0 or co.indices.max() >= n_items):
            raise ModelError(f"{path}: corrupt artifact, a neighbour index outside 0..{n_items - 1}")
        return co


def _block_top_k(pos: np.ndarray, user: np.ndarray, item: np.ndarray, liked: np.ndarray, n: int, lo: int, hi: int,
                 n_items: int, window: int, top_k: int,
                 col_sum: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Rows ``lo..hi-1`` of the cosine-normalised co-rating matrix, each cut to its ``top_k`` largest (at least:
    ties at a dense row's cut are kept for :meth:`CoRatedItems._top_k` to break): ``(row, col, weight)``.

    A block with few pairs for its size is counted by sorting its pair keys; a dense one (the popular
    movies) into a dense accumulator, where the cut is one partition per row.
    """
    keys_parts, weight_parts = [], []
    for d in range(1, window + 1):
        for q in (pos + d, pos - d):
            ok = (q >= 0) & (q < n)
            p, q = pos[ok], q[ok]
            ok = (user[q] == user[p]) & (item[q] != item[p]) & liked[q]
            keys_parts.append((item[p[ok]] - lo) * n_items + item[q[ok]])
            weight_parts.append(np.full(len(keys_parts[-1]), 1.0 / d))
    keys, pair_w = np.concatenate(keys_parts), np.concatenate(weight_parts)
    rows, size = hi - lo, (hi - lo) * n_items
    if 4 * len(keys) < size:
        uniq, inverse = np.unique(keys, return_inverse=True)
        counts = np.bincount(inverse, pair_w)
        r, c = uniq // n_items, uniq % n_items
        row_sum = np.bincount(r, counts, minlength=rows)
        weight = counts / np.sqrt(row_sum[r] * col_sum[c])
        order = np.lexsort((c, -weight, r))
        r, c, weight = r[order], c[order], weight[order]
        rank = np.arange(len(r)) - np.searchsorted(r, r)
        keep = rank < top_k
        return r[keep] + lo, c[keep], weight[keep]
    dense = np.bincount(keys, pair_w, minlength=size).reshape(rows, n_items)
    row_sum = dense.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(dense > 0, dense / np.sqrt(row_sum[:, None] * col_sum[None, :]), 0.0)
    threshold = np.zeros(rows)
    heavy = np.flatnonzero((dense > 0).sum(axis=1) > top_k)
    if len(heavy):
        threshold[heavy] = np.partition(w[heavy], n_items - top_k, axis=1)[:, n_items - top_k]
    r, c = np.nonzero((w >= threshold[:, None]) & (dense > 0))
    return r.astype(np.int64) + lo, c.astype(np.int64), w[r, c]


def push_recent(recent: tuple[int, ...], item: int, length: int) -> tuple[int, ...]:
    """``recent`` (newest first) after rating ``item``: it moves to the front, the list keeps ``length``.

    >>> push_recent((3, 1, 2), 2, 3), push_recent((3, 1, 2), 5, 3)
    ((2, 3, 1), (5, 3, 1))
    """
    return (item, *(j for j in recent if j != item))[:length]


def recent_items(rated: Mapping[int, tuple[float, int]], index_of: Mapping[int, int] | None,
                 length: int) -> list[int]:  # fmt: skip
    """The ``length`` most recently rated movies of a rated map ``{movie_id: (rating, event_ts)}``, newest first.

    Ordered by event time, then movie id (both descending): the order in which a time-ordered replay
    applies them (events are ordered by time, then user, then movie), so the gateway's list from
    ``rs:user:{uid}:rated`` equals the one :func:`push_recent` keeps while the events are applied.
    ``index_of`` maps ids to item indexes (None: return the ids); unknown movies are dropped.

    >>> recent_items({10: (5.0, 100), 11: (3.0, 200), 12: (4.0, 200)}, None, 2)
    [12, 11]
    """
    if index_of is None:
        known = [(ts, mid, mid) for mid, (_, ts) in rated.items()]
    else:
        known = [(ts, mid, index_of[mid]) for mid, (_, ts) in rated.items() if mid in index_of]
    return [j for _, _, j in heapq.nlargest(length, known)]  # O(n), not a full sort: heavy raters are common
