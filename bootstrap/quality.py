"""Data-quality rules, thresholds and the quality report.

Each rating rule is a small named function returning a polars boolean expression
("is this row bad?"). They are the rating contract's rules (schemas/ratings.py: the
ones POST /ratings, ``reelstream rate`` and the worker apply), vectorised over the
whole file from the contract's constants and limits; :func:`rating_rules` takes
their order and reason names from the contract, after one CSV-only rule
(``missing_value``), so a kept row is an event the worker applies when it is
replayed, and a quarantined row carries the dead-letter reason the worker would
give it. Nothing is dropped silently:

    ratings in = kept + quarantined + duplicates superseded

and the report states that equation. Duplicate (user, movie) pairs among valid
rows keep the latest (highest ts, then the later line) and count the others as
superseded; superseded rows are written to the quarantine file too, with reason
``duplicate_superseded``, so they can be inspected.

The clock is an argument (``now_ts``), so rules are deterministic in tests; the limits
(:class:`schemas.ratings.RatingLimits`) default to the process settings, like the worker's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from bootstrap.store import QUARANTINE_SCHEMA
from reelstream.errors import QualityError
from reelstream.settings import get_settings
from schemas import ratings as contract
from schemas.ratings import RatingLimits

__all__ = [
    "QualityResult",
    "QualityThresholds",
    "build_report",
    "check_ratings",
    "default_limits",
    "enforce",
    "movie_issues",
    "pair_key",
    "rating_rules",
]

DUPLICATE_REASON = "duplicate_superseded"


class QualityThresholds(BaseModel):
    """Limits beyond which the run fails and writes nothing (fractions in [0, 1])."""

    model_config = ConfigDict(frozen=True)

    #: quarantined ratings / ratings in.
    max_bad_fraction: float = Field(0.01, ge=0, le=1)
    #: superseded duplicate (user, movie) ratings / ratings in.
    max_duplicate_fraction: float = Field(0.01, ge=0, le=1)
    #: movies without genres / movies (ml-32m has ~8% "(no genres listed)").
    max_no_genre_fraction: float = Field(0.25, ge=0, le=1)
    #: movies with an empty title / movies.
    max_empty_title_fraction: float = Field(0.01, ge=0, le=1)


# --------------------------------------------------------------------------- rules (ratings)


# CSV only - every field is present (an Avro RatingEvent always has them).
def is_missing_value() -> pl.Expr:
    return pl.any_horizontal(pl.col(c).is_null() for c in ("user_id", "movie_id", "rating", "ts"))


# bad_user - contract.is_user_id_valid.
def is_bad_user() -> pl.Expr:
    return (pl.col("user_id") < contract.MIN_ID) | (pl.col("user_id") > contract.MAX_ID)


# reserved_user - contract.is_source_allowed: a dataset row is a person's rating (replayed as "replay").
def is_reserved_user(limits: RatingLimits) -> Callable[[], pl.Expr]:
    return lambda: pl.col("user_id") >= limits.probe_user_base


# rating_out_of_range - contract.is_rating_in_range and contract.is_half_step.
def is_rating_out_of_range() -> pl.Expr:
    rating = pl.col("rating")
    steps = rating / contract.RATING_STEP
    outside = (rating < contract.MIN_RATING) | (rating > contract.MAX_RATING)
    return ~rating.is_finite() | outside | (steps != steps.round(0))


# bad_timestamp - contract.is_in_time_window, in the file's seconds (no ms product: a corrupt ts cannot overflow).
def is_outside_time_window(now_ts: int, limits: RatingLimits) -> Callable[[], pl.Expr]:
    first_s = -(-limits.min_ts_ms // 1000)  # the first whole second at or after min_ts_ms
    last_s = (now_ts * 1000 + limits.max_future_ms) // 1000
    return lambda: (pl.col("ts") < first_s) | (pl.col("ts") > last_s)


# unknown_movie - the contract's known_movie: the catalogue is the dataset's movies.
def is_unknown_movie(movie_ids: pl.Series) -> Callable[[], pl.Expr]:
    return lambda: ~pl.col("movie_id").is_in(movie_ids.implode())


def rating_rules(now_ts: int, movie_ids: pl.Series, limits: RatingLimits) -> list[tuple[str, Callable[[], pl.Expr]]]:
    """The rules in order of precedence (a row's reason is the first it breaks): the contract's order.

    ``key_mismatch`` has no row rule: replay keys every row by its user id (``schemas.ratings.user_key``).
    """
    by_reason = {
        "bad_user": is_bad_user,
        "reserved_user": is_reserved_user(limits),
        "rating_out_of_range": is_rating_out_of_range,
        "bad_timestamp": is_outside_time_window(now_ts, limits),
        "unknown_movie": is_unknown_movie(movie_ids),
    }
    return [("missing_value", is_missing_value)] + [(r, by_reason[r]) for r in contract.REASONS if r in by_reason]


def default_limits() -> RatingLimits:
    """The contract's limits from the process settings (the worker's)."""
    return RatingLimits.from_settings(get_settings())


def _reason_expr(rules: list[tuple[str, Callable[[], pl.Expr]]]) -> pl.Expr:
    expr: Any = pl
    for name, rule in rules:
        expr = expr.when(rule().fill_null(True)).then(pl.lit(name))
    return expr.otherwise(pl.lit(None, dtype=pl.String)).alias("reason")


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class QualityResult:
    """Kept ratings (file order), the quarantine frame and the counts behind the report."""

    kept: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    reasons: dict[str, int]
    duplicates_superseded: int

    @property
    def quarantined(self) -> int:
        """Rows rejected by a rule (duplicates are counted separately)."""
        return sum(self.reasons.values())

    def counts(self) -> dict[str, Any]:
        """The conservation equation as a report section."""
        kept = self.kept.height
        return {
            "in": self.rows_in,
            "kept": kept,
            "quarantined": self.quarantined,
            "duplicates_superseded": self.duplicates_superseded,
            "equation": f"{self.rows_in} = {kept} + {self.quarantined} + {self.duplicates_superseded}"
            " (kept + quarantined + duplicates superseded)",
            "balanced": self.rows_in == kept + self.quarantined + self.duplicates_superseded,
        }


def pair_key() -> pl.Expr:
    """One int64 per (user, movie): hashing one column is much cheaper than two."""
    return (pl.col("user_id") * (1 << 31) + pl.col("movie_id")).alias("_pair")


def _all_distinct(frame: pl.DataFrame) -> bool:
    """Cheap proofs that no (user, movie) pair repeats (``is_duplicated`` hashes every row: ~10 s at 32M).

    MovieLens files are sorted by (user, movie), so a strictly increasing pair key is the
    usual answer, in one fused pass; otherwise a distinct count settles it.
    """
    if frame.height < 2:
        return True
    increasing = frame.select((pair_key().diff().slice(1) > 0).all()).item()
    return bool(increasing) or frame.select(pair_key().n_unique()).item() == frame.height


def check_ratings(
    ratings: pl.DataFrame,
    movie_ids: pl.Series,
    now_ts: int,
    first_line: int,
    limits: RatingLimits | None = None,
) -> QualityResult:
    """Apply the rating rules and resolve duplicate pairs; never raises on bad rows.

    ``first_line`` is the file line of the first row, so quarantined rows carry their line;
    ``limits`` default to :func:`default_limits`.
    The clean case costs two fused passes and no copy; reasons, row numbers and the
    duplicate resolution are computed only for the rows that need them.
    """
    rows_in = ratings.height
    rules = rating_rules(now_ts, movie_ids, limits or default_limits())
    any_bad = pl.any_horizontal([rule().fill_null(True) for _, rule in rules])
    bad_mask = ratings.select(any_bad.alias("bad")).to_series()
    n_bad = int(bad_mask.sum())
    line = (pl.col("_row").cast(pl.Int64) + first_line).alias("line")
    if n_bad:
        numbered = ratings.with_row_index("_row")
        bad = numbered.filter(bad_mask).with_columns(_reason_expr(rules), line)
        valid = ratings.filter(~bad_mask)
        reasons = dict(bad.group_by("reason").len().sort("reason").iter_rows())
    else:
        numbered = None
        bad = pl.DataFrame(schema=QUARANTINE_SCHEMA)
        valid = ratings
        reasons = {}

    losers = pl.DataFrame(schema=QUARANTINE_SCHEMA)
    kept = valid
    if not _all_distinct(valid):
        rows = (numbered if numbered is not None else ratings.with_row_index("_row")).filter(~bad_mask)
        rows = rows.with_columns(pair_key())
        dup_mask = rows["_pair"].is_duplicated()
        dups = rows.filter(dup_mask)
        winners = dups.sort(["_pair", "ts", "_row"]).unique(subset="_pair", keep="last", maintain_order=True)
        lost = dups.join(winners.select("_row"), on="_row", how="anti")
        losers = lost.with_columns(line, pl.lit(DUPLICATE_REASON).alias("reason"))
        kept = pl.concat([rows.filter(~dup_mask), winners]).sort("_row").drop("_row", "_pair")

    quarantine = pl.concat(
        [
            bad.select([pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()]),
            losers.select([pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()]),
        ],
    )
    return QualityResult(
        kept=kept,
        quarantine=quarantine,
        rows_in=rows_in,
        reasons=reasons,
        duplicates_superseded=losers.height,
    )


def movie_issues(movies: pl.DataFrame) -> dict[str, Any]:
    """Catalogue-level findings (movies are kept; these feed thresholds and the report)."""
    no_genre = movies.filter(pl.col("genres").list.len() == 0)
    empty_title = movies.filter(pl.col("title").str.len_chars() == 0)
    dup_ids = movies.filter(pl.col("movie_id").is_duplicated())
    return {
        "count": movies.height,
        "no_genres": no_genre.height,
        "no_genres_sample": no_genre["movie_id"].head(10).to_list(),
        "empty_titles": empty_title.height,
        "empty_titles_sample": empty_title["movie_id"].head(10).to_list(),
        "duplicate_ids": dup_ids["movie_id"].n_unique() if dup_ids.height else 0,
        "without_year": int(movies["year"].null_count()),
    }


def build_report(
    *,
    dataset: str,
    result: QualityResult,
    movies: dict[str, Any],
    tags: dict[str, Any],
    schema: dict[str, dict[str, str]],
    thresholds: QualityThresholds,
    ts_range: tuple[int | None, int | None],
    now_ts: int,
    rating_limits: RatingLimits | None = None,
) -> dict[str, Any]:
    """Assemble the report and evaluate the thresholds (``passed``, ``violations``)."""
    window = rating_limits or default_limits()
    n = max(result.rows_in, 1)
    n_movies = max(movies["count"], 1)
    fractions = {
        "bad": result.quarantined / n,
        "duplicate": result.duplicates_superseded / n,
        "no_genre": movies["no_genres"] / n_movies,
        "empty_title": movies["empty_titles"] / n_movies,
    }
    limits = {
        "bad": thresholds.max_bad_fraction,
        "duplicate": thresholds.max_duplicate_fraction,
        "no_genre": thresholds.max_no_genre_fraction,
        "empty_title": thresholds.max_empty_title_fraction,
    }
    violations = [
        f"{name} fraction {fractions[name]:.2%} exceeds limit {limits[name]:.2%}"
        for name in fractions
        if fractions[name] > limits[name]
    ]
    return {
        "dataset": dataset,
        "checked_at": datetime.fromtimestamp(now_ts, UTC).isoformat(),
        "passed": not violations,
        "violations": violations,
        "thresholds": thresholds.model_dump(),
        "fractions": fractions,
        "ratings": result.counts(),
        "reasons": result.reasons,
        "timestamps": {
            "min": ts_range[0],
            "max": ts_range[1],
            "not_before": -(-window.min_ts_ms // 1000),
            "not_after": (now_ts * 1000 + window.max_future_ms) // 1000,
        },
        "movies": movies,
        "tags": tags,
        "schema": schema,
    }


def enforce(report: dict[str, Any], source: str) -> None:
    """Raise :class:`QualityError` (carrying the report) when a threshold is exceeded."""
    if report["violations"]:
        err = QualityError(
            "data-quality thresholds exceeded, nothing written: " + "; ".join(report["violations"]), path=source
        )
        err.report = report  # type: ignore[attr-defined]
        raise err
