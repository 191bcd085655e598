"""The temporal split: cut rules, replay order, and the fast path equal to the plain sort."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from bootstrap import features
from bootstrap.readers import read_dataset
from bootstrap.split import resolve_cut, split_ratings
from reelstream.settings import PROJECT_ROOT
from tests.bootstrap_helpers import RATINGS, write_csv_dataset


def test_quantile_cut_is_a_real_timestamp() -> None:
    ts = pl.Series([r[3] for r in RATINGS])
    spec = resolve_cut(ts, quantile=0.8)
    assert spec.method == "quantile" and spec.cut_ts == RATINGS[4][3]
    assert spec.as_metadata(5, 2)["history_ratings"] == 5


def test_sorted_lookup_equals_polars_quantile() -> None:
    ts = pl.Series(sorted([5, 1, 9, 9, 3, 7, 7, 2, 8, 4, 6])).set_sorted()
    for q in (0.1, 0.25, 0.5, 0.8, 0.95):
        assert resolve_cut(ts, quantile=q).cut_ts == ts.quantile(q, interpolation="lower")


def test_explicit_cut_wins() -> None:
    spec = resolve_cut(pl.Series([1, 2, 3]), quantile=0.5, cut_ts=2)
    assert (spec.method, spec.quantile, spec.cut_ts) == ("cut", None, 2)


@pytest.mark.parametrize("q", [0.0, 1.0, None])
def test_bad_quantile(q: float | None) -> None:
    with pytest.raises(ValueError):
        resolve_cut(pl.Series([1, 2]), quantile=q)


def test_history_is_at_or_before_cut(tmp_path: Path) -> None:
    raw = read_dataset(write_csv_dataset(tmp_path / "ml"))
    cut = RATINGS[2][3]
    items, users = features.item_index(raw.movies), features.user_index(raw.ratings["user_id"])
    history, stream = features.order_and_split(raw.ratings, items, users, cut)
    assert history["ts"].max() == cut and stream["ts"].min() > cut
    assert history.height + stream.height == len(RATINGS)
    stats = features.user_stats(users, history).sort("user_id")
    assert stats["n_ratings"].to_list() == [3, 0, 0]
    assert stats["first_ts"].to_list() == [RATINGS[0][3], None, None]
    assert stats["mean_rating"].null_count() == 2
    plain_h, plain_s = split_ratings(raw.ratings, cut)
    assert (plain_h.height, plain_s.height) == (history.height, stream.height)


def test_fast_order_equals_plain_sort_on_shuffled_and_tied_data() -> None:
    raw = read_dataset(PROJECT_ROOT / "data" / "ml-latest-small")
    items, users = features.item_index(raw.movies), features.user_index(raw.ratings["user_id"])
    cut = 1458635171
    fast_h, fast_s = features.order_and_split(raw.ratings, items, users, cut)
    # A shuffled input takes the general path (three-key sort); results must match exactly.
    shuffled = raw.ratings.sample(fraction=1.0, shuffle=True, seed=7)
    slow_h, slow_s = features.order_and_split(shuffled, items, users, cut)
    assert fast_h.equals(slow_h) and fast_s.equals(slow_s)
    full = pl.concat([fast_h, fast_s])
    assert full.equals(full.sort(["ts", "user_id", "movie_id"]))
    assert full.filter(pl.col("ts").is_duplicated()).height > 0  # ties really were exercised
