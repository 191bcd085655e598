"""The temporal split: HISTORY (trains the model) and STREAM (replayed later).

One global cut time, never per user, so the stream replays the future of the whole
system and nothing the model trained on happens after anything it is evaluated on.
Ratings with ``ts <= cut_ts`` go to HISTORY.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import polars as pl

__all__ = ["SplitSpec", "resolve_cut", "split_ratings", "split_sorted"]


@dataclass(frozen=True)
class SplitSpec:
    """How the cut was chosen and where it lies (recorded in metadata)."""

    method: Literal["quantile", "cut"]
    quantile: float | None
    cut_ts: int

    def as_metadata(self, history: int, stream: int) -> dict[str, Any]:
        """The ``split`` section of metadata.json."""
        return {**asdict(self), "history_ratings": history, "stream_ratings": stream}


def resolve_cut(ts: pl.Series, *, quantile: float | None = 0.8, cut_ts: int | None = None) -> SplitSpec:
    """Fix the cut: an explicit ``cut_ts`` wins, else the ``quantile`` of the timestamps.

    The quantile uses ``lower`` interpolation so the cut is a real rating time and at
    least that fraction of ratings lands in HISTORY.

    >>> resolve_cut(pl.Series([1, 2, 3, 4, 5]), quantile=0.8)
    SplitSpec(method='quantile', quantile=0.8, cut_ts=4)
    """
    if cut_ts is not None:
        return SplitSpec("cut", None, int(cut_ts))
    if quantile is None or not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    if ts.flags["SORTED_ASC"] and ts.null_count() == 0 and ts.len():
        value = ts[int(quantile * (ts.len() - 1))]  # what "lower" interpolation picks, without a sort
    else:
        value = ts.quantile(quantile, interpolation="lower")
    if value is None:
        raise ValueError("cannot take a quantile of no timestamps")
    return SplitSpec("quantile", quantile, int(value))  # type: ignore[arg-type]


def split_ratings(ratings: pl.DataFrame, cut_ts: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(HISTORY, STREAM), each keeping the input's row order."""
    in_history = pl.col("ts") <= cut_ts
    return ratings.filter(in_history), ratings.filter(~in_history)


def split_sorted(ratings: pl.DataFrame, cut_ts: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(HISTORY, STREAM) of ratings already sorted by ``ts``: zero-copy slices at the cut."""
    cut = int(ratings["ts"].search_sorted(cut_ts, side="right"))
    return ratings.slice(0, cut), ratings.slice(cut)
