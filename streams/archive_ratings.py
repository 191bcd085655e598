"""The archived rating events as training data: what ``reelstream retrain`` adds to HISTORY.

The archive (:mod:`streams.archive`) keeps every record of the ratings topic, valid or not, copies
included. Training wants each *applied* rating once, so this reader keeps what the worker would apply:
records that decode and pass the rating contract (:func:`schemas.ratings.rating_verdict`, with the
store's catalogue as the known movies), no freshness probes, and one row per rating event (user, movie,
rating, event time: the worker's identity of an event, so a producer's retry or a re-read log counts
once). Movies announced by MovieEvents only are not in the store's catalogue and are left out (a model
is trained on the store's item index).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl

from schemas.ratings import PROBE_SOURCE, RatingLimits, rating_verdict
from schemas.wire import DecodeError, codec_for
from streams.archive import archived_partitions, read_segments

__all__ = ["ArchivedRatings", "archived_ratings"]


class ArchivedRatings:
    """The archive's applicable ratings (``frame``: user_id, movie_id, rating, ts in seconds) and what was left out."""

    def __init__(self, frame: pl.DataFrame, records: int, refused: int, copies: int) -> None:
        self.frame = frame
        self.records = records  #: records read
        self.refused = refused  #: undecodable or refused by the contract (dead letters), or probes
        self.copies = copies  #: the same rating event again

    def __len__(self) -> int:
        return self.frame.height


def archived_ratings(archive_dir: Path, topic: str, known_movies: np.ndarray, limits: RatingLimits) -> ArchivedRatings:
    """Every applicable rating event in the archive of ``topic`` (see the module docstring)."""
    codec = codec_for("RatingEvent")
    known = set(int(m) for m in known_movies.tolist())
    now_ms = int(time.time() * 1000)
    users: list[int] = []
    movies: list[int] = []
    ratings: list[float] = []
    ts: list[int] = []
    records = refused = 0
    for partition in archived_partitions(archive_dir, topic):
        for _segment, frame in read_segments(archive_dir, topic, partition):
            for key, value in frame.select("key", "value").iter_rows():
                records += 1
                try:
                    ev = codec.decode(value)
                except DecodeError:
                    refused += 1
                    continue
                if (
                    ev["source"] == PROBE_SOURCE
                    or rating_verdict(ev, key, now_ms=now_ms, limits=limits, known_movie=known.__contains__) is not None
                ):
                    refused += 1
                    continue
                users.append(ev["user_id"])
                movies.append(ev["movie_id"])
                ratings.append(ev["rating"])
                ts.append(ev["event_ts"])
    frame = pl.DataFrame(
        {"user_id": users, "movie_id": movies, "rating": ratings, "ts_ms": ts},
        schema={"user_id": pl.Int64, "movie_id": pl.Int64, "rating": pl.Float32, "ts_ms": pl.Int64},
    )
    unique = frame.unique(maintain_order=True)
    out = unique.with_columns((pl.col("ts_ms") // 1000).alias("ts")).drop("ts_ms")
    return ArchivedRatings(out, records, refused, frame.height - unique.height)
