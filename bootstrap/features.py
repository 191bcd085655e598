"""Dense ids, item side features and user/item statistics for the feature store.

* ``item_idx`` numbers every movie of the catalogue (by ``movie_id``), rated or not, so a
  model can score cold items from their side features.
* ``user_idx`` numbers every user with a kept rating (by ``user_id``); in append mode
  existing users keep their index and new users are numbered after them.
* Side features are long-form (item_idx, feature, value): multi-hot genres, one-hot
  release decade, the release year scaled to [0, 1] and frequent tags (lower-cased,
  only tags applied up to the cut, so STREAM-time tags do not leak into training).
* Statistics come from HISTORY only, for the same reason.

Ids are mapped with a numpy lookup table when they are small (MovieLens ids are),
which is an order of magnitude faster than a hash join on tens of millions of rows.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from bootstrap.split import split_sorted
from schemas import side_features as sf

__all__ = [
    "attach_indices",
    "item_index",
    "item_side_features",
    "item_stats",
    "order_and_split",
    "replay_order",
    "user_index",
    "user_stats",
]

#: Largest id for which a dense lookup table is used (beyond it, a join).
_LUT_MAX_ID = 50_000_000


def item_index(movies: pl.DataFrame) -> pl.DataFrame:
    """The catalogue in ``movie_id`` order with ``item_idx`` 0..n-1 (duplicate ids keep the first)."""
    return (
        movies.unique(subset="movie_id", keep="first", maintain_order=True)
        .sort("movie_id")
        .with_row_index("item_idx")
        .with_columns(pl.col("item_idx").cast(pl.Int32))
    )


def user_index(user_ids: pl.Series, previous: pl.DataFrame | None = None) -> pl.DataFrame:
    """``(user_idx, user_id)``: sorted ids, or ``previous`` extended by the new ids (sorted)."""
    ids = user_ids.unique().sort()
    if previous is None or previous.height == 0:
        return pl.DataFrame({"user_idx": np.arange(ids.len(), dtype=np.int32), "user_id": ids.cast(pl.Int64)})
    prev = previous.select("user_idx", "user_id").sort("user_idx")
    new = ids.filter(~ids.is_in(prev["user_id"].implode()))
    start = prev.height
    extra = pl.DataFrame(
        {"user_idx": np.arange(start, start + new.len(), dtype=np.int32), "user_id": new.cast(pl.Int64)}
    )
    return pl.concat([prev.with_columns(pl.col("user_idx").cast(pl.Int32)), extra])


def _lookup(values: pl.Series, keys: pl.Series, idx: pl.Series, name: str) -> pl.Series:
    """Map ``values`` through ``keys -> idx`` (every value must be a key)."""
    kmax = int(keys.max()) if keys.len() else 0  # type: ignore[arg-type]
    kmin = int(keys.min()) if keys.len() else 0  # type: ignore[arg-type]
    if kmin >= 0 and kmax <= _LUT_MAX_ID:
        lut = np.full(kmax + 1, -1, dtype=np.int32)
        lut[keys.to_numpy()] = idx.to_numpy()
        return pl.Series(name, lut[values.to_numpy()], dtype=pl.Int32)
    mapping = pl.DataFrame({"k": keys, name: idx})
    return pl.DataFrame({"k": values}).join(mapping, on="k", how="left", maintain_order="left")[name]


def attach_indices(ratings: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame) -> pl.DataFrame:
    """Add ``user_idx`` and ``item_idx`` to ratings whose ids are all known."""
    return ratings.with_columns(
        _lookup(ratings["user_id"], users["user_id"], users["user_idx"], "user_idx"),
        _lookup(ratings["movie_id"], items["movie_id"], items["item_idx"], "item_idx"),
    )


def user_stats(users: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """Per user: HISTORY count, mean, first and last ts (0 / null for stream-only users).

    ``bincount`` and ``ufunc.at`` on the dense ``user_idx`` beat a hash group-by ~3x at 25M rows.
    """
    n_users = users.height
    idx = history["user_idx"].to_numpy()
    ts = history["ts"].to_numpy()
    counts = np.bincount(idx, minlength=n_users)
    sums = np.bincount(idx, weights=history["rating"].to_numpy(), minlength=n_users)
    first = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(n_users, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(first, idx, ts)
    np.maximum.at(last, idx, ts)
    seen = counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(seen, sums / np.maximum(counts, 1), np.nan)
    by_idx = users.select("user_idx", "user_id").sort("user_idx")
    return by_idx.with_columns(
        pl.Series("n_ratings", counts, dtype=pl.Int32),
        pl.Series("mean_rating", mean, dtype=pl.Float32).fill_nan(None),
        pl.Series("first_ts", first, dtype=pl.Int64).set(pl.Series(~seen), None),  # type: ignore[arg-type]
        pl.Series("last_ts", last, dtype=pl.Int64).set(pl.Series(~seen), None),  # type: ignore[arg-type]
    )


def item_stats(items: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """The catalogue with HISTORY count and mean rating (0 / null for unrated movies)."""
    counts = np.bincount(history["item_idx"].to_numpy(), minlength=items.height)
    sums = np.bincount(history["item_idx"].to_numpy(), weights=history["rating"].to_numpy(), minlength=items.height)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return items.with_columns(
        pl.Series("n_ratings", counts, dtype=pl.Int32),
        pl.Series("mean_rating", means, dtype=pl.Float32).fill_nan(None),
    )


def item_side_features(
    items: pl.DataFrame, tags: pl.DataFrame, *, cut_ts: int | None, min_tag_count: int = 5
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(item_side long-form, side_features names): genres, decade, year, frequent tags.

    The names and values are those of :mod:`schemas.side_features` (the one definition the
    worker and the gateway also build new movies' rows from). A tag is kept when it was
    applied at least ``min_tag_count`` times (before the cut).
    """
    genre = items.select("item_idx", pl.col("genres").alias("token")).explode("token").drop_nulls("token").unique()
    genre = genre.select("item_idx", pl.lit(sf.GENRE).alias("kind"), pl.col("token"), pl.lit(1.0).alias("value"))
    decade = items.drop_nulls("year").select(
        "item_idx",
        pl.lit(sf.DECADE).alias("kind"),
        sf.decade_of(pl.col("year")).cast(pl.String).alias("token"),
        pl.lit(1.0).alias("value"),
    )
    lo, hi = sf.year_range(items["year"].drop_nulls().unique().to_list())
    year = items.drop_nulls("year").select(
        "item_idx",
        pl.lit(sf.YEAR).alias("kind"),
        pl.lit(sf.YEAR_TOKEN).alias("token"),
        sf.scaled_year(pl.col("year"), lo, hi).alias("value"),
    )
    parts = [genre, decade, year]
    if tags.height:
        t = tags.drop_nulls(["tag", "movie_id"])
        if cut_ts is not None:
            t = t.filter(pl.col("ts") <= cut_ts)
        distinct = t["tag"].unique()
        tokens = pl.DataFrame({"tag": distinct, "token": [sf.tag_token(s) for s in distinct.to_list()]})
        t = t.join(tokens, on="tag", how="left").filter(pl.col("token").str.len_chars() > 0)
        frequent = t.group_by("token").len().filter(pl.col("len") >= min_tag_count)["token"]
        tag = (
            t.filter(pl.col("token").is_in(frequent.implode()))
            .join(items.select("movie_id", "item_idx"), on="movie_id", how="inner")
            .select("item_idx", "token")
            .unique()
            .select("item_idx", pl.lit(sf.TAG).alias("kind"), "token", pl.lit(1.0).alias("value"))
        )
        parts.append(tag)
    long = pl.concat([p.with_columns(pl.col("value").cast(pl.Float64)) for p in parts])
    long = long.with_columns((pl.col("kind") + sf.SEP + pl.col("token")).alias("name"))
    kind_order = pl.col("kind").replace_strict({k: i for i, k in enumerate(sf.KINDS)}, return_dtype=pl.Int8)
    names = (
        long.select("name", "kind")
        .unique()
        .sort(kind_order, pl.col("name"))
        .with_row_index("feature")
        .with_columns(pl.col("feature").cast(pl.Int32))
    )
    side = (
        long.join(names.select("name", "feature"), on="name")
        .select(pl.col("item_idx").cast(pl.Int32), "feature", pl.col("value").cast(pl.Float32))
        .sort("item_idx", "feature")
    )
    return side, names.select("feature", "name", "kind")


def _sorted_by_pair(ratings: pl.DataFrame) -> bool:
    """Are rows in strictly increasing (user_id, movie_id) order (as MovieLens files are)?"""
    if ratings.height < 2:
        return True
    key = ratings["user_id"] * (1 << 31) + ratings["movie_id"]
    return bool((key.diff().slice(1) > 0).all())


def _shifted_lut(keys: pl.Series, idx: pl.Series, shift: int) -> np.ndarray:
    """Dense table ``key -> idx << shift`` (int64) for small non-negative ids."""
    lut = np.zeros(int(keys.max()) + 1, dtype=np.int64)  # type: ignore[arg-type]
    lut[keys.to_numpy()] = idx.to_numpy().astype(np.int64) << shift
    return lut


def order_and_split(
    ratings: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame, cut_ts: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`replay_order` then HISTORY/STREAM as zero-copy slices at ``cut_ts``."""
    return split_sorted(replay_order(ratings, items, users), cut_ts)


def replay_order(ratings: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame) -> pl.DataFrame:
    """Index ratings and put them in replay order (ts, user_id, movie_id); ``ts`` is flagged sorted.

    Fast path (the usual case): when rows come sorted by (user_id, movie_id) and
    ``user_idx`` follows ``user_id``, the row number breaks ts ties in exactly that
    order, so one int64 key ``(ts - min) << bits | row`` replaces a three-column sort;
    one packed payload (user_idx, item_idx, 2*rating) is gathered instead of six
    columns. At 32M rows this is ~3x faster than a three-column ``sort``.
    """
    n = ratings.height
    row_bits = max(1, (n - 1).bit_length())
    users_by_idx = users.sort("user_idx")
    fast = (
        n > 0
        and users_by_idx["user_id"].is_sorted()
        and users_by_idx.height < (1 << 27)
        and items.height < (1 << 32)
        and int(users["user_id"].min()) >= 0  # type: ignore[arg-type]
        and int(users["user_id"].max()) <= _LUT_MAX_ID  # type: ignore[arg-type]
        and int(items["movie_id"].min()) >= 0  # type: ignore[arg-type]
        and int(items["movie_id"].max()) <= _LUT_MAX_ID  # type: ignore[arg-type]
        and _sorted_by_pair(ratings)
    )
    ts_min = int(ratings["ts"].min()) if n else 0  # type: ignore[arg-type]
    ts_span = (int(ratings["ts"].max()) - ts_min) if n else 0  # type: ignore[arg-type]
    if not fast or ts_span.bit_length() + row_bits > 62:
        indexed = attach_indices(ratings, items, users).sort(["ts", "user_id", "movie_id"], multithreaded=True)
        return indexed.with_columns(pl.col("ts").set_sorted())

    # One packed int64 per row: user_idx << 36 | item_idx << 4 | 2*rating, built from
    # pre-shifted lookup tables (cache-resident gathers, no intermediate index arrays).
    payload = _shifted_lut(users["user_id"], users["user_idx"], 36)[ratings["user_id"].to_numpy()]
    payload |= _shifted_lut(items["movie_id"], items["item_idx"], 4)[ratings["movie_id"].to_numpy()]
    payload |= (ratings["rating"].to_numpy() * 2).astype(np.int64)
    key = (ratings["ts"].to_numpy() - ts_min) << row_bits
    key |= np.arange(n, dtype=np.int64)
    key = pl.Series(key).sort().to_numpy()  # polars' multi-threaded sort of one int64 column
    payload = payload[key & ((1 << row_bits) - 1)]
    ts = key >> row_bits
    ts += ts_min
    del key
    u = (payload >> 36).astype(np.int32)
    i = ((payload >> 4) & 0xFFFFFFFF).astype(np.int32)
    frame = pl.DataFrame(
        {
            "user_id": users_by_idx["user_id"].to_numpy()[u],
            "movie_id": items.sort("item_idx")["movie_id"].to_numpy()[i],
            "rating": (payload & 0xF).astype(np.float32) / np.float32(2),
            "ts": pl.Series(ts).set_sorted(),
            "user_idx": u,
            "item_idx": i,
        }
    )
    return frame
