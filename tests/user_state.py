"""Test and benchmark support: catalogues, and a user's Redis record as the worker leaves it for given ratings.

The state functions use :mod:`models.state` (``fold_in`` / ``encode``) and the user record's codec
(:mod:`schemas.user_record`), so the three user keys (record, rated hash, recent list) seeded here are what
the stream worker would have written for the same ratings (tests/test_user_record.py compares the two).
Nothing else is written as the worker would: no item tables, trending, prior, fences or dedupe.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import redis

from models.runtime import ModelRuntime
from models.state import UserState, cold_state, encode, fold_in
from schemas import redis_keys as keys
from schemas.user_record import decode_rated, decode_user, encode_rated, encode_recent, encode_user

__all__ = ["apply_rating", "movielens_items", "synthetic_items", "write_user"]

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
    "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def synthetic_items(movie_ids: Sequence[int], *, seed: int = 0) -> pl.DataFrame:
    """An items frame (store schema) with random genres, years and Zipf-like popularity."""
    rng = np.random.default_rng(seed)
    n = len(movie_ids)
    n_genres = rng.integers(1, 4, n)
    genres = [sorted(rng.choice(GENRES, size=g, replace=False).tolist()) for g in n_genres]
    return pl.DataFrame(
        {
            "item_idx": np.arange(n, dtype=np.int32),
            "movie_id": np.asarray(movie_ids, dtype=np.int64),
            "title": [f"Movie {m} ({1950 + m % 70})" for m in movie_ids],
            "genres": genres,
            "year": (1950 + np.asarray(movie_ids) % 70).astype(np.int32),
            "n_ratings": (1000.0 / (1.0 + rng.permutation(n))).astype(np.int32),
            "mean_rating": rng.uniform(2.0, 4.5, n).astype(np.float32),
        },
        schema_overrides={"genres": pl.List(pl.String())},
    )


def movielens_items(folder: Path) -> pl.DataFrame:
    """The items frame from a MovieLens folder's movies.csv (and rating counts from ratings.csv)."""
    counts: dict[int, list[float]] = {}
    ratings = folder / "ratings.csv"
    if ratings.exists():
        with ratings.open() as fh:
            for row in csv.DictReader(fh):
                c = counts.setdefault(int(row["movieId"]), [0, 0.0])
                c[0] += 1
                c[1] += float(row["rating"])
    rows = []
    with (folder / "movies.csv").open() as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            mid = int(row["movieId"])
            title = row["title"].strip()
            year = int(title[-5:-1]) if title.endswith(")") and title[-5:-1].isdigit() else None
            g = [] if row["genres"] == "(no genres listed)" else row["genres"].split("|")
            n, s = counts.get(mid, [0, 0.0])
            rows.append((i, mid, title, g, year, int(n), (s / n) if n else None))
    return pl.DataFrame(
        rows,
        schema={"item_idx": pl.Int32(), "movie_id": pl.Int64(), "title": pl.String(), "genres": pl.List(pl.String()),
                "year": pl.Int32(), "n_ratings": pl.Int32(), "mean_rating": pl.Float32()},
        orient="row",
    )  # fmt: skip


def apply_rating(
    client: redis.Redis, runtime: ModelRuntime, user_id: int, movie_id: int, rating: float, ts_ms: int
) -> int:
    """Apply one rating to the user's Redis state as the worker does; returns the new state version.

    The same steps as :meth:`streams.processor.RatingProcessor.plan` for one event: the stored
    record decoded by :mod:`schemas.user_record`, ``fold_in``, :meth:`UserRecord.observe`, and the
    record, rated entry and recent entry written back through the same codec.
    """
    idx = runtime.item_index(movie_id)
    if idx is None:
        raise KeyError(movie_id)
    rec = decode_user(client.hgetall(keys.user(user_id)))
    state = cold_state(runtime.weights) if rec.pre is None else UserState(rec.pre, rec.norm2, rec.n_events)
    stored = client.hget(keys.user_rated(user_id), movie_id)
    prev = None if stored is None else decode_rated({movie_id: stored})[movie_id]
    state = fold_in(runtime.weights, state, idx, rating, prev)
    rec.observe(rating, ts_ms)
    rec.pre, rec.norm2, rec.n_events = state.pre, state.norm2, state.n_events
    rec.mu, rec.logvar = encode(runtime.weights, state)
    rec.model_version = runtime.version
    fields = encode_user(rec)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.user(user_id), mapping=dict(zip(fields[::2], fields[1::2], strict=True)))
    pipe.hset(keys.user_rated(user_id), *encode_rated({movie_id: (rating, ts_ms)}))
    pipe.lpush(keys.user_recent(user_id), encode_recent(movie_id, rating, ts_ms))
    pipe.ltrim(keys.user_recent(user_id), 0, keys.RECENT_MAX - 1)
    pipe.hincrby(keys.STATS, "events_applied", 1)
    pipe.execute()
    return rec.version


def write_user(
    client: redis.Redis, runtime: ModelRuntime, user_id: int, ratings: Iterable[tuple[int, float]], ts0: int = 0
) -> int:
    """Apply ``ratings`` in order (timestamps ``ts0``, ``ts0 + 1``...); returns the final state version."""
    version = 0
    for i, (mid, r) in enumerate(ratings):
        version = apply_rating(client, runtime, user_id, mid, r, ts0 + i)
    return version
