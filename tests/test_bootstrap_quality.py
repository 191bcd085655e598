"""Quality rules: one bad fixture per rule, the rating contract's verdicts, duplicates, counts, thresholds."""

from __future__ import annotations

import json

import polars as pl
import pytest

from bootstrap.pipeline import BootstrapOptions, run_bootstrap
from bootstrap.quality import QualityThresholds, check_ratings
from bootstrap.store import list_versions
from reelstream.errors import QualityError
from schemas.ratings import MAX_ID, RatingLimits, rating_verdict, user_key
from tests.bootstrap_helpers import RATINGS, write_csv_dataset

NOW = 1_700_000_000
LIMITS = RatingLimits(min_ts_ms=631_152_000_500, max_future_ms=86_400_000, probe_user_base=1_000_000)
MIN_TS = 631_152_001  # the first whole second inside the window (min_ts_ms is not a whole second)
LAST_TS = NOW + 86_400  # the last second inside it
MOVIE_IDS = pl.Series([1, 2, 3, 5], dtype=pl.Int64)
GOOD = (1, 1, 4.0, 946684800)


def frame(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"user_id": pl.Int64, "movie_id": pl.Int64, "rating": pl.Float32, "ts": pl.Int64},
        orient="row",
    )


# Case table: (bad row, expected reason). Each row breaks exactly one rule.
CASES = [
    ((2, None, 4.0, 946684800), "missing_value"),
    ((2, 1, 5.5, 946684800), "rating_out_of_range"),
    ((2, 1, 0.0, 946684800), "rating_out_of_range"),
    ((2, 1, 3.7, 946684800), "rating_out_of_range"),  # not a half step
    ((2, 1, float("nan"), 946684800), "rating_out_of_range"),
    ((2, 1, 3.0, MIN_TS - 1), "bad_timestamp"),
    ((2, 1, 3.0, LAST_TS + 1), "bad_timestamp"),
    ((2, 4, 3.0, 946684800), "unknown_movie"),
    ((0, 1, 3.0, 946684800), "bad_user"),
    ((MAX_ID + 1, 1, 3.0, 946684800), "bad_user"),
    ((LIMITS.probe_user_base, 1, 3.0, 946684800), "reserved_user"),
]


@pytest.mark.parametrize(("row", "reason"), CASES, ids=[c[1] + str(i) for i, c in enumerate(CASES)])
def test_each_rule_quarantines_with_reason_and_line(row: tuple[object, ...], reason: str) -> None:
    result = check_ratings(frame([GOOD, row]), MOVIE_IDS, NOW, first_line=2, limits=LIMITS)
    assert result.kept.height == 1
    assert result.reasons == {reason: 1}
    q = result.quarantine.row(0, named=True)
    assert q["reason"] == reason and q["line"] == 3
    assert result.counts()["balanced"]


def test_boundaries_are_valid() -> None:
    rows = [(1, 1, 0.5, MIN_TS), (1, 2, 5.0, LAST_TS), (LIMITS.probe_user_base - 1, 3, 2.5, NOW)]
    assert check_ratings(frame(rows), MOVIE_IDS, NOW, first_line=2, limits=LIMITS).kept.height == 3


@pytest.mark.parametrize("row", [c[0] for c in CASES[1:]] + [GOOD, (1, 2, 0.5, MIN_TS), (1, 5, 5.0, LAST_TS)])
def test_bootstrap_and_the_worker_give_a_row_the_same_verdict(row: tuple) -> None:
    """A kept row is an event the worker applies when replayed; a quarantined one gets its dead-letter reason."""
    uid, mid, rating, ts = row
    event = {"user_id": uid, "movie_id": mid, "rating": rating, "event_ts": ts * 1000, "source": "replay"}
    known = set(MOVIE_IDS.to_list()).__contains__
    verdict = rating_verdict(event, user_key(uid), now_ms=NOW * 1000, limits=LIMITS, known_movie=known)
    result = check_ratings(frame([row]), MOVIE_IDS, NOW, first_line=2, limits=LIMITS)
    assert result.reasons == ({verdict.reason: 1} if verdict else {})


def test_duplicates_keep_latest_and_are_counted() -> None:
    rows = [(1, 1, 2.0, 1000000000), (1, 1, 4.0, 1100000000), (1, 1, 3.0, 1050000000), (2, 1, 3.0, 1000000000)]
    result = check_ratings(frame(rows), MOVIE_IDS, NOW, first_line=2)
    assert result.duplicates_superseded == 2
    kept = result.kept.filter(pl.col("user_id") == 1)
    assert kept.height == 1 and kept["rating"][0] == 4.0
    assert sorted(result.quarantine["line"].to_list()) == [2, 4]
    counts = result.counts()
    assert counts["equation"].startswith("4 = 2 + 0 + 2 (kept + quarantined") and counts["balanced"]


def test_pipeline_writes_quarantine_and_report(settings) -> None:  # type: ignore[no-untyped-def]
    rows = [*RATINGS, (3, 99, 4.0, 1136073600), (3, 1, 9.0, 1136073601), (1, 1, 2.0, 946684700)]
    data = write_csv_dataset(settings.var_dir.parent / "ml", rows)
    lax = QualityThresholds(max_bad_fraction=0.5, max_duplicate_fraction=0.5)
    result = run_bootstrap(settings.store_dir, settings.reports_dir, BootstrapOptions(data, thresholds=lax), now_ts=NOW)
    assert result.path is not None
    quarantine = pl.read_parquet(result.path / "quarantine.parquet")
    assert sorted(quarantine["reason"].to_list()) == ["duplicate_superseded", "rating_out_of_range", "unknown_movie"]
    report = json.loads((settings.reports_dir / "quality.json").read_text())
    assert report == json.loads((result.path / "quality.json").read_text())
    assert report["ratings"]["equation"].startswith("10 = 7 + 2 + 1 ") and report["ratings"]["balanced"]
    assert report["movies"]["no_genres"] == 1 and report["movies"]["without_year"] == 1
    assert result.metadata["counts"]["ratings"] == 7


def test_threshold_exceeded_fails_and_writes_nothing(settings) -> None:  # type: ignore[no-untyped-def]
    rows = [*RATINGS, (3, 99, 4.0, 1136073600)]
    data = write_csv_dataset(settings.var_dir.parent / "ml", rows)
    with pytest.raises(QualityError, match=r"bad fraction 12\.50% exceeds limit 1\.00%") as err:
        run_bootstrap(settings.store_dir, settings.reports_dir, BootstrapOptions(data), now_ts=NOW)
    assert "ratings.csv" in str(err.value)
    assert list_versions(settings.store_dir) == []
    assert not (settings.reports_dir / "quality.json").exists()
    assert not (settings.store_dir / "CURRENT").exists()
