"""Small hand-made datasets for the model tests (no files, no store)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.data import Events, Interactions

GENRES = ("Animation", "Horror", "Drama")


def taste_data(n_users: int = 40, n_items: int = 30, seed: int = 0) -> Interactions:
    """Animation lovers and horror lovers; the last two movies were never rated.

    Items ``0..n/3`` are Animation, the next third Horror, the rest Drama; item
    ``n_items - 2`` is a never-rated pure Animation movie and ``n_items - 1`` a
    never-rated pure Horror one. Even users love Animation, odd users Horror;
    everyone rates a few Drama movies 3 stars. The last 20% of events (by time)
    form the STREAM, with two users who have no history.
    """
    rng = np.random.default_rng(seed)
    third = (n_items - 2) // 3
    genre_of = np.array([0] * third + [1] * third + [2] * (n_items - 2 - 2 * third) + [0, 1])
    users, items, ratings = [], [], []
    for u in range(n_users):
        loved = u % 2
        mine = np.flatnonzero(genre_of[: n_items - 2] == loved)
        other = np.flatnonzero(genre_of[: n_items - 2] == 1 - loved)
        drama = np.flatnonzero(genre_of[: n_items - 2] == 2)
        picks = [(i, 5.0 if rng.random() < 0.6 else 4.0) for i in rng.choice(mine, size=6, replace=False)]
        picks += [(i, 1.0) for i in rng.choice(other, size=1)]
        picks += [(i, 3.0) for i in rng.choice(drama, size=2, replace=False)]
        for j in rng.permutation(len(picks)):
            users.append(u), items.append(picks[j][0]), ratings.append(picks[j][1])
    n = len(users)
    ts = np.sort(rng.choice(np.arange(10 * n), size=n, replace=False)).astype(np.int64)
    order = rng.permutation(n)
    user = np.asarray(users, np.int32)[order]
    item = np.asarray(items, np.int32)[order]
    rating = np.asarray(ratings, np.float32)[order]
    # two cold users: all their events move after the split
    cold = (user == n_users - 1) | (user == n_users - 2)
    split = ts[int(0.8 * n)]
    ts = np.where(cold, ts + split, ts)
    order = np.lexsort((item, user, ts))
    ev = Events(user[order], item[order], rating[order], ts[order])
    before = ev.ts < split
    side = sp.csr_matrix((np.ones(n_items, np.float32), (np.arange(n_items), genre_of)), shape=(n_items, 3))
    return Interactions(
        history=ev.select(before), stream=ev.select(~before), n_users=n_users, n_items=n_items,
        item_side=side, side_names=[f"genre:{g}" for g in GENRES], movie_ids=np.arange(1, n_items + 1) * 10,
        genres=[[GENRES[g]] for g in genre_of], version=7,
    )  # fmt: skip
