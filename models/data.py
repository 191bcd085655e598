"""The arrays every learner and the evaluation read: a HISTORY/STREAM split as numpy.

Learners never read files or the feature store themselves: they take an
:class:`Interactions`, which :func:`from_store` builds from the bootstrap's
feature store and :func:`from_movielens` builds straight from a MovieLens folder
(experiments, benchmarks and tests that must not depend on a built store).
Tests build one from literal arrays.

Conventions (shared with ``bootstrap/store.py``):

* ``item_idx`` covers every movie of ``movies.csv``, rated or not, so a movie
  nobody rated before the split still has an index and side features;
* events are sorted by time, then user, then movie;
* HISTORY is every rating with ``ts < split_ts``, STREAM the rest, where
  ``split_ts`` is the 0.8 quantile of all timestamps by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from reelstream.errors import DataError
from schemas.ratings import LIKED_MIN_RATING
from schemas.side_features import year_range

__all__ = ["POSITIVE", "Events", "Interactions", "from_movielens", "from_store"]

#: A rating at or above this many stars is a positive (an interaction): the rating contract's "like".
POSITIVE = LIKED_MIN_RATING


@dataclass(frozen=True)
class Events:
    """Rating events as parallel arrays, in time order."""

    user: np.ndarray  #: int32 user_idx
    item: np.ndarray  #: int32 item_idx
    rating: np.ndarray  #: float32 stars
    ts: np.ndarray  #: int64 seconds

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def select(self, mask: np.ndarray) -> Events:
        return Events(self.user[mask], self.item[mask], self.rating[mask], self.ts[mask])


@dataclass
class Interactions:
    """A HISTORY/STREAM split plus the catalogue's side features.

    Parameters
    ----------
    history, stream
        Rating events before and after the split.
    n_users, n_items
        Sizes of the dense user and item index spaces.
    item_side
        CSR float32 [n_items, n_side]: genres, decade, tag tokens.
    side_names
        One name per side-feature column.
    movie_ids
        int64 [n_items], item_idx -> MovieLens id.
    genres
        One list of genre names per item (diversity metrics).
    version
        The feature-store version the arrays come from (``None`` for ad-hoc data).
    side_year_range
        ``(lo, hi)`` of the ``year=scaled`` side feature (:mod:`schemas.side_features`), so a
        model can scale a new movie's year as training did; ``None`` when no feature has it.
    """

    history: Events
    stream: Events
    n_users: int
    n_items: int
    item_side: sp.csr_matrix
    side_names: list[str]
    movie_ids: np.ndarray
    genres: list[list[str]]
    version: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    side_year_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.item_side.shape[0] != self.n_items or len(self.movie_ids) != self.n_items:
            raise DataError(
                f"item_side has {self.item_side.shape[0]} rows and movie_ids {len(self.movie_ids)}, "
                f"expected n_items={self.n_items}"
            )
        for name, ev in (("history", self.history), ("stream", self.stream)):
            if len(ev) and (ev.item.max() >= self.n_items or ev.user.max() >= self.n_users):
                raise DataError(f"{name}: user or item index out of range")

    @property
    def n_side(self) -> int:
        return int(self.item_side.shape[1])

    def history_matrix(self, weight: Any = None) -> sp.csr_matrix:
        """CSR float32 [n_users, n_items] of HISTORY; ``weight(ratings) -> values`` (default: positives = 1).

        A user who rated a movie twice keeps the last rating.
        """
        h = self.history
        if weight is None:
            values = (h.rating >= POSITIVE).astype(np.float32)
        else:
            values = np.asarray(weight(h.rating), dtype=np.float32)
        # keep the last rating of each (user, item): later events overwrite earlier ones
        key = h.user.astype(np.int64) * self.n_items + h.item
        _, last = np.unique(key[::-1], return_index=True)
        keep = len(key) - 1 - last
        m = sp.csr_matrix(
            (values[keep], (h.user[keep], h.item[keep])), shape=(self.n_users, self.n_items), dtype=np.float32
        )
        m.eliminate_zeros()
        return m

    def known_items(self) -> np.ndarray:
        """bool [n_items]: the item has at least one HISTORY rating (the evaluation catalogue)."""
        known = np.zeros(self.n_items, dtype=bool)
        known[self.history.item] = True
        return known


def _events(frame: Any) -> Events:
    return Events(
        user=frame["user_idx"].to_numpy().astype(np.int32),
        item=frame["item_idx"].to_numpy().astype(np.int32),
        rating=frame["rating"].to_numpy().astype(np.float32),
        ts=frame["ts"].to_numpy().astype(np.int64),
    )


def from_store(store: Any) -> Interactions:
    """Build from a ``bootstrap.store.FeatureStore`` (polars frames + csr side matrix)."""
    items = store.items.sort("item_idx")
    n_items = items.height
    n_users = int(store.users.height) if getattr(store, "users", None) is not None else 0
    n_users = max(
        n_users,
        int(store.history["user_idx"].max() or 0) + 1,
        int(store.stream["user_idx"].max() or 0) + 1 if store.stream.height else 0,
    )
    return Interactions(
        history=_events(store.history),
        stream=_events(store.stream),
        n_users=n_users,
        n_items=n_items,
        item_side=sp.csr_matrix(store.item_side, dtype=np.float32),
        side_names=list(store.side_names),
        movie_ids=items["movie_id"].to_numpy().astype(np.int64),
        genres=[list(g) if g is not None else [] for g in items["genres"].to_list()],
        version=int(store.version) if store.version is not None else None,
        metadata=dict(getattr(store, "metadata", {}) or {}),
        side_year_range=year_range(items["year"].drop_nulls().unique().to_list()),
    )


def from_movielens(
    folder: Path, *, split_quantile: float = 0.8, min_tag_count: int = 5, max_rows: int | None = None
) -> Interactions:
    """Read a MovieLens folder (``ratings.csv``, ``movies.csv``, ``tags.csv``) and split it by global time.

    Side features are the feature store's (``bootstrap.features.item_side_features``, the names and values
    of :mod:`schemas.side_features`): genres, decade, scaled year, and tags applied at least
    ``min_tag_count`` times before the split, so a model trained here serves new movies' rows as well.
    """
    import polars as pl

    folder = Path(folder)
    try:
        movies = pl.read_csv(folder / "movies.csv", schema_overrides={"movieId": pl.Int64})
        ratings = pl.read_csv(
            folder / "ratings.csv",
            schema_overrides={"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float32,
                              "timestamp": pl.Int64},
            n_rows=max_rows,
        )  # fmt: skip
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DataError(f"cannot read MovieLens files: {exc}", path=folder) from None
    tags_path = folder / "tags.csv"
    tags = pl.read_csv(tags_path, schema_overrides={"movieId": pl.Int64}) if tags_path.exists() else None

    movies = movies.sort("movieId").with_row_index("item_idx")
    movie_ids = movies["movieId"].to_numpy().astype(np.int64)
    users = np.unique(ratings["userId"].to_numpy())
    ratings = ratings.sort(["timestamp", "userId", "movieId"])
    user_idx = np.searchsorted(users, ratings["userId"].to_numpy()).astype(np.int32)
    item_idx = np.searchsorted(movie_ids, ratings["movieId"].to_numpy())
    if (item_idx >= len(movie_ids)).any() or (
        movie_ids[np.minimum(item_idx, len(movie_ids) - 1)] != ratings["movieId"].to_numpy()
    ).any():
        raise DataError("ratings.csv names movies missing from movies.csv", path=folder / "ratings.csv")
    ts = ratings["timestamp"].to_numpy().astype(np.int64)
    events = Events(user_idx, item_idx.astype(np.int32), ratings["rating"].to_numpy().astype(np.float32), ts)
    split_ts = float(np.quantile(ts, split_quantile)) if len(ts) else 0.0
    before = ts < split_ts

    # --- side features: bootstrap's one definition (schemas.side_features names and values) -----------
    from bootstrap.features import item_side_features

    no_genres = ("", "(no genres listed)")
    genres = [[] if not g or g.strip() in no_genres else g.split("|") for g in movies["genres"].to_list()]
    years = []
    for title in movies["title"].to_list():
        m = re.search(r"\((\d{4})\)\s*$", title.strip())
        years.append(int(m.group(1)) if m else None)
    items = pl.DataFrame(
        {"item_idx": np.arange(len(movie_ids), dtype=np.int32), "movie_id": movie_ids, "genres": genres,
         "year": years},
        schema={"item_idx": pl.Int32, "movie_id": pl.Int64, "genres": pl.List(pl.String), "year": pl.Int32},
    )  # fmt: skip
    tag_rows = (
        tags.select(pl.col("movieId").alias("movie_id"), pl.col("tag").cast(pl.String), pl.col("timestamp").alias("ts"))
        if tags is not None and tags.height
        else pl.DataFrame(schema={"movie_id": pl.Int64, "tag": pl.String, "ts": pl.Int64})
    )
    long, names = item_side_features(items, tag_rows, cut_ts=int(split_ts), min_tag_count=min_tag_count)
    side = sp.csr_matrix(
        (long["value"].to_numpy().astype(np.float32), (long["item_idx"].to_numpy(), long["feature"].to_numpy())),
        shape=(len(movie_ids), names.height),
    )
    col_of = names.sort("feature")["name"].to_list()
    return Interactions(
        history=events.select(before),
        stream=events.select(~before),
        n_users=len(users),
        n_items=len(movie_ids),
        item_side=side,
        side_names=list(col_of),
        movie_ids=movie_ids,
        genres=genres,
        version=None,
        metadata={"source": str(folder), "split_ts": split_ts, "split_quantile": split_quantile},
        side_year_range=year_range([y for y in years if y is not None]),
    )
