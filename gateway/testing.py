"""Test and benchmark support: catalogues and Redis user state written exactly as the worker writes them.

The state functions use :mod:`models.state` (``fold_in`` / ``encode``), so a
user seeded here is what the stream worker would have produced from the same
ratings.
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


def _load_state(raw: dict[bytes, bytes], hidden: int) -> UserState:
    if not raw or b"pre" not in raw:
        return UserState(pre=np.zeros(hidden, dtype=np.float64))
    return UserState(
        pre=np.frombuffer(raw[b"pre"], dtype=np.float64).copy(),
        norm2=float(raw[b"norm2"]),
        n_events=int(raw[b"n_events"]),
    )


def apply_rating(
    client: redis.Redis, runtime: ModelRuntime, user_id: int, movie_id: int, rating: float, ts_ms: int
) -> int:
    """Apply one rating to the user's Redis state as the worker does; returns the new state version."""
    idx = runtime.item_index(movie_id)
    if idx is None:
        raise KeyError(movie_id)
    raw = client.hgetall(keys.user(user_id))
    state = _load_state(raw, runtime.weights.hidden) if raw else cold_state(runtime.weights)
    prev_raw = client.hget(keys.user_rated(user_id), str(movie_id))
    prev = float(prev_raw) if prev_raw is not None else None
    state = fold_in(runtime.weights, state, idx, rating, prev)
    mu, logvar = encode(runtime.weights, state)
    n = int(raw.get(b"n", 0)) + (0 if prev is not None else 1)
    total = float(raw.get(b"sum", 0.0)) + rating - (prev or 0.0)
    sumsq = float(raw.get(b"sumsq", 0.0)) + rating * rating - (prev or 0.0) ** 2
    version = int(raw.get(b"version", 0)) + 1
    pipe = client.pipeline(transaction=True)
    pipe.hset(
        keys.user(user_id),
        mapping={
            "version": version, "pre": state.pre.astype(np.float64).tobytes(), "norm2": state.norm2,
            "n_events": state.n_events, "mu": mu.astype(np.float32).tobytes(),
            "logvar": logvar.astype(np.float32).tobytes(), "n": n, "sum": total, "sumsq": sumsq,
            "first_ms": int(raw.get(b"first_ms", ts_ms)), "last_ms": ts_ms, "model_version": runtime.version,
        },
    )  # fmt: skip
    pipe.hset(keys.user_rated(user_id), str(movie_id), rating)
    pipe.lpush(keys.user_recent(user_id), f"{movie_id}:{rating:g}:{ts_ms}")
    pipe.ltrim(keys.user_recent(user_id), 0, keys.RECENT_MAX - 1)
    pipe.hincrby(keys.STATS, "events_applied", 1)
    pipe.execute()
    return version


def write_user(
    client: redis.Redis, runtime: ModelRuntime, user_id: int, ratings: Iterable[tuple[int, float]], ts0: int = 0
) -> int:
    """Apply ``ratings`` in order (timestamps ``ts0``, ``ts0 + 1``...); returns the final state version."""
    version = 0
    for i, (mid, r) in enumerate(ratings):
        version = apply_rating(client, runtime, user_id, mid, r, ts0 + i)
    return version
