"""Incremental mode: only new rows, the cut kept, a new version, and idempotence."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from bootstrap.pipeline import BootstrapOptions, run_append, run_bootstrap
from bootstrap.quality import QualityThresholds
from bootstrap.store import current_version, list_versions, load_store
from reelstream.errors import DataError
from tests.bootstrap_helpers import RATINGS, ratings_csv, write_csv_dataset

NOW = 1_700_000_000
LAX = QualityThresholds(max_bad_fraction=0.5)
NEW_ROWS = [
    (1, 1, 4.0, 946684800),  # identical to a stored row: skipped
    (3, 5, 1.0, 1136073600),  # identical: skipped
    (4, 1, 3.5, 1000000000),  # new user, before the cut -> HISTORY
    (2, 5, 4.0, 1200000000),  # new pair after the cut -> STREAM
    (2, 1, 5.0, 1150000000),  # later re-rating of a stored HISTORY pair: replaces it, -> STREAM
    (1, 1, 9.0, 1200000000),  # bad rating: quarantined
]


@pytest.fixture
def base(settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    data = write_csv_dataset(tmp_path / "ml")
    run_bootstrap(settings.store_dir, settings.reports_dir, BootstrapOptions(data), now_ts=NOW)
    return settings


def test_append_then_idempotent(base, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = base
    v1 = load_store(s.store_dir)
    new = tmp_path / "new.csv"
    new.write_text(ratings_csv(NEW_ROWS))
    result = run_append(s.store_dir, s.reports_dir, new, thresholds=LAX, now_ts=NOW)
    assert result.created and result.version == "v0002" and current_version(s.store_dir) == "v0002"
    r = result.report["ratings"]
    assert (r["in"], r["added"], r["skipped_identical"], r["quarantined"], r["replaced_stored"]) == (6, 3, 2, 1, 1)
    assert r["balanced"]
    v2 = load_store(s.store_dir)
    assert v2.metadata["split"]["cut_ts"] == v1.metadata["split"]["cut_ts"] == RATINGS[4][3]
    assert (v2.history.height, v2.stream.height) == (5, 4)
    entry = v2.metadata["appended"][0]
    assert (entry["history_added"], entry["stream_added"], entry["parent_version"]) == (0, 2, "v0001")
    assert v2.users["user_id"].to_list()[:3] == v1.users["user_id"].to_list()  # stable indices
    assert v2.users.filter(pl.col("user_id") == 4)["user_idx"][0] == 3
    pair = pl.concat([v2.history, v2.stream]).filter((pl.col("user_id") == 2) & (pl.col("movie_id") == 1))
    assert pair["rating"].to_list() == [5.0]
    quarantine = pl.read_parquet(v2.path / "quarantine.parquet")
    assert sorted(quarantine["reason"].to_list()) == ["rating_out_of_range", "replaced_by_later_rating"]

    again = run_append(s.store_dir, s.reports_dir, new, thresholds=LAX, now_ts=NOW)
    assert not again.created and "already appended" in again.message
    copy = tmp_path / "same-rows-other-file.csv"
    copy.write_text(ratings_csv(NEW_ROWS[:5]))
    third = run_append(s.store_dir, s.reports_dir, copy, thresholds=LAX, now_ts=NOW)
    assert not third.created and "no new ratings" in third.message
    assert list_versions(s.store_dir) == [1, 2] and current_version(s.store_dir) == "v0002"


def test_append_bad_file(base, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.csv"
    bad.write_text("userId,movieId,rating\n1,1,4.0\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: wrong columns"):
        run_append(base.store_dir, base.reports_dir, bad, now_ts=NOW)
    with pytest.raises(DataError, match="does not exist"):
        run_append(base.store_dir, base.reports_dir, tmp_path / "missing.csv", now_ts=NOW)
    assert list_versions(base.store_dir) == [1]


def test_append_without_store(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    new = tmp_path / "new.csv"
    new.write_text(ratings_csv(NEW_ROWS))
    with pytest.raises(DataError, match="run `reelstream bootstrap` first"):
        run_append(settings.store_dir, settings.reports_dir, new, now_ts=NOW)
