"""The bootstrap ETL end to end: read -> validate -> split -> features -> versioned store.

Two entry points:

* :func:`run_bootstrap` builds a new store version from a whole dataset.
* :func:`run_append` folds a ratings CSV into the current version: rows identical to
  stored ones are skipped, the cut time is kept, and a new version is written only if
  something changed (so re-running with the same file is a no-op).

Both validate before writing anything: a failed quality check raises
:class:`~reelstream.errors.QualityError` and leaves the store and reports untouched.
Progress is reported through ``step(name)``, a context-manager factory, so the CLI
can show a rich progress display while tests pass nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from bootstrap import features, quality
from bootstrap.quality import QualityThresholds
from bootstrap.readers import (
    _EXTRA_FILES,
    FORMATS,
    RawDataset,
    detect_format,
    read_dataset,
    read_ratings_csv,
    sha256_file,
)
from bootstrap.split import SplitSpec, resolve_cut, split_sorted
from bootstrap.store import (
    ITEM_SIDE_SCHEMA,
    SIDE_FEATURES_SCHEMA,
    StoreFrames,
    load_store,
    store_lock,
    version_name,
    write_version,
)
from reelstream.errors import DataError

__all__ = [
    "BootstrapOptions",
    "BootstrapResult",
    "StepFn",
    "run_append",
    "run_bootstrap",
    "source_change",
    "source_files",
]

StepFn = Callable[[str], AbstractContextManager[object]]


@dataclass(frozen=True)
class BootstrapOptions:
    """What a bootstrap run reads and how it splits and checks."""

    data_path: Path
    quantile: float | None = 0.8
    cut_ts: int | None = None
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    min_tag_count: int = 5


@dataclass(frozen=True)
class BootstrapResult:
    """Outcome of a run; ``created`` is False when an append found nothing new."""

    created: bool
    message: str
    version: str | None
    path: Path | None
    metadata: dict[str, Any]
    report: dict[str, Any]
    rows_in: int
    seconds: float
    timings: dict[str, float]


class _Timer:
    """Wraps the caller's ``step`` and records each step's wall time."""

    def __init__(self, step: StepFn | None) -> None:
        self.step = step
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        if self.step is None:
            yield
        else:
            with self.step(name):
                yield
        self.timings[name] = round(time.perf_counter() - t0, 3)


def source_files(folder: Path) -> dict[str, list[int]]:
    """File name -> ``[size, mtime_ns]`` of every file a bootstrap of ``folder`` reads (those it hashes).

    Recorded in the store metadata next to the sha256 digests, so telling whether a dataset folder still holds
    what a store was built from costs a ``stat`` per file instead of hashing gigabytes (``reelstream up --data``).
    """
    fmt = detect_format(folder)
    names = [f for f in (*FORMATS[fmt], *_EXTRA_FILES[fmt]) if (folder / f).is_file()]
    return {f: [(st := (folder / f).stat()).st_size, st.st_mtime_ns] for f in names}


def source_change(metadata: dict[str, Any], folder: Path) -> str | None:
    """Why a store with ``metadata`` was not built from ``folder`` as it is now (another folder, changed files).

    The folder is compared by resolved path, then file by file: the same names, sizes and mtimes is the same data;
    a file whose size or mtime differs (or a store recorded before sizes were) is hashed and compared with the
    recorded sha256, so a ``touch`` or a copy with new mtimes is not a change but an edited file is. None: the
    store holds this folder's data.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("dataset folder does not exist or is not a folder", path=folder)
    recorded = metadata.get("source")
    if recorded is None or Path(recorded) != folder.resolve():
        return f"built from {recorded}, not {folder.resolve()}"
    now = source_files(folder)
    digests: dict[str, str] = metadata.get("source_checksums", {})
    if set(now) != set(digests):
        return f"was built from the files {sorted(digests)}; the folder now holds {sorted(now)}"
    stats: dict[str, list[int]] = metadata.get("source_files", {})
    changed = [f for f in sorted(now) if stats.get(f) != now[f] and sha256_file(folder / f) != digests[f]]
    return f"{', '.join(changed)} changed since" if changed else None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _write_report(reports_dir: Path, report: dict[str, Any]) -> None:
    """Replace ``reports_dir/quality.json`` atomically."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    tmp = reports_dir / f".quality.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(reports_dir / "quality.json")


def _schema_of(df: pl.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in df.schema.items()}


def _tag_findings(tags: pl.DataFrame, movie_ids: pl.Series) -> dict[str, int]:
    return {
        "count": tags.height,
        "unknown_movie": int((~tags["movie_id"].is_in(movie_ids.implode())).sum()) if tags.height else 0,
        "empty": int(tags["tag"].is_null().sum()) if tags.height else 0,
    }


def _build_frames(
    ratings: pl.DataFrame,
    items: pl.DataFrame,
    users: pl.DataFrame,
    cut_ts: int,
    side: tuple[pl.DataFrame, pl.DataFrame],
    quarantine: pl.DataFrame,
) -> StoreFrames:
    """Index, sort into replay order, split and compute statistics."""
    history, stream = features.order_and_split(ratings, items, users, cut_ts)
    return StoreFrames(
        history=history,
        stream=stream,
        items=features.item_stats(items, history),
        users=features.user_stats(users, history),
        item_side=side[0],
        side_features=side[1],
        quarantine=quarantine,
    )


def _counts(frames: StoreFrames, rows_in: int, result_counts: dict[str, Any], tags: int) -> dict[str, Any]:
    return {
        "ratings_in": rows_in,
        "ratings": frames.history.height + frames.stream.height,
        "quarantined": result_counts["quarantined"],
        "duplicates_superseded": result_counts["duplicates_superseded"],
        "users": frames.users.height,
        "movies": frames.items.height,
        "tags": tags,
        "history_ratings": frames.history.height,
        "stream_ratings": frames.stream.height,
        "side_features": frames.side_features.height,
        "item_side_nnz": frames.item_side.height,
    }


def _publish(
    store_dir: Path,
    reports_dir: Path,
    frames: StoreFrames,
    metadata: dict[str, Any],
    report: dict[str, Any],
    timer: _Timer,
    t0: float,
    rows_in: int,
    message: Callable[[str], str],
) -> BootstrapResult:
    """Write the new version atomically under the store lock, then the report; ``message(version_name)``."""
    with timer("write"), store_lock(store_dir):
        path = write_version(store_dir, frames, {**metadata, "timings": timer.timings}, report)
        _write_report(reports_dir, report)
    return BootstrapResult(
        created=True,
        message=message(path.name),
        version=path.name,
        path=path,
        metadata=json.loads((path / "metadata.json").read_text(encoding="utf-8")),
        report=report,
        rows_in=rows_in,
        seconds=time.perf_counter() - t0,
        timings=timer.timings,
    )


def run_bootstrap(
    store_dir: Path,
    reports_dir: Path,
    options: BootstrapOptions,
    *,
    now_ts: int | None = None,
    step: StepFn | None = None,
) -> BootstrapResult:
    """Build a new store version from the dataset at ``options.data_path``."""
    t0 = time.perf_counter()
    now = int(time.time()) if now_ts is None else now_ts
    timer = _Timer(step)
    with timer("read"):
        files = source_files(options.data_path)  # before reading: a file written meanwhile then reads as changed
        raw: RawDataset = read_dataset(options.data_path)
    with timer("validate"):
        movie_ids = raw.movies["movie_id"]
        result = quality.check_ratings(raw.ratings, movie_ids, now, raw.first_line)
        kept_ts = result.kept["ts"]
        report = quality.build_report(
            dataset=raw.name,
            result=result,
            movies=quality.movie_issues(raw.movies),
            tags=_tag_findings(raw.tags, movie_ids),
            schema={"ratings": _schema_of(raw.ratings), "movies": _schema_of(raw.movies), "tags": _schema_of(raw.tags)},
            thresholds=options.thresholds,
            ts_range=(kept_ts.min(), kept_ts.max()) if kept_ts.len() else (None, None),  # type: ignore[arg-type]
            now_ts=now,
        )
        quality.enforce(report, str(raw.source / raw.ratings_file))
        if result.kept.height == 0:
            raise quality.QualityError("no valid ratings left after validation", path=raw.source / raw.ratings_file)
    with timer("order"):
        items = features.item_index(raw.movies)
        users = features.user_index(result.kept["user_id"])
        ordered = features.replay_order(result.kept, items, users)
    with timer("split"):  # on ts-sorted rows the quantile is a lookup and the split two slices
        spec: SplitSpec = resolve_cut(ordered["ts"], quantile=options.quantile, cut_ts=options.cut_ts)
        history, stream = split_sorted(ordered, spec.cut_ts)
    with timer("features"):
        side = features.item_side_features(items, raw.tags, cut_ts=spec.cut_ts, min_tag_count=options.min_tag_count)
        frames = StoreFrames(
            history=history,
            stream=stream,
            items=features.item_stats(items, history),
            users=features.user_stats(users, history),
            item_side=side[0],
            side_features=side[1],
            quarantine=result.quarantine,
        )
    counts = _counts(frames, result.rows_in, report["ratings"], raw.tags.height)
    metadata: dict[str, Any] = {
        "dataset": raw.name,
        "format": raw.format,
        "source": str(raw.source),
        "source_checksums": raw.checksums,
        "source_files": files,
        "counts": counts,
        "split": spec.as_metadata(frames.history.height, frames.stream.height),
        "created_at": _iso(now),
        "appended": [],
        "options": {"min_tag_count": options.min_tag_count, "thresholds": options.thresholds.model_dump()},
    }
    return _publish(store_dir, reports_dir, frames, metadata, report, timer, t0, result.rows_in, "wrote {}".format)


def run_append(
    store_dir: Path,
    reports_dir: Path,
    ratings_file: Path,
    *,
    thresholds: QualityThresholds | None = None,
    now_ts: int | None = None,
    step: StepFn | None = None,
) -> BootstrapResult:
    """Fold the new rows of ``ratings_file`` into the current version, keeping its cut.

    Rows identical to stored ones are skipped; for a (user, movie) pair already stored
    the later rating wins (a tie keeps the stored one). Nothing new -> no new version.
    """
    t0 = time.perf_counter()
    now = int(time.time()) if now_ts is None else now_ts
    thresholds = thresholds or QualityThresholds()
    timer = _Timer(step)
    ratings_file = Path(ratings_file)
    with timer("read"), store_lock(store_dir):
        store = load_store(store_dir)
    checksum = sha256_file(ratings_file) if ratings_file.is_file() else ""
    meta = store.metadata
    base = {"version": None, "path": None, "metadata": meta, "timings": timer.timings}
    if checksum and any(a.get("sha256") == checksum for a in meta.get("appended", [])):
        return BootstrapResult(
            created=False,
            message=f"{ratings_file.name} was already appended (same sha256); nothing to do",
            report={},
            rows_in=0,
            seconds=time.perf_counter() - t0,
            **base,  # type: ignore[arg-type]
        )
    with timer("read"):
        new = read_ratings_csv(ratings_file)
    with timer("validate"):
        result = quality.check_ratings(new, store.items["movie_id"], now, first_line=2)
        cols = ["user_id", "movie_id", "rating", "ts"]
        existing = pl.concat([store.history.select(cols), store.stream.select(cols)])
        # Only stored rows sharing a (user, movie) pair with the new file can match or clash:
        # one is_in pass over the store, then every join runs on small frames.
        new_pairs = result.kept.select(quality.pair_key()).to_series().implode()
        touching = existing.filter(quality.pair_key().is_in(new_pairs))
        fresh = result.kept.join(touching, on=cols, how="anti", nulls_equal=True)
        skipped = result.kept.height - fresh.height
        # A pair already stored: keep the later rating (a tie keeps the stored one).
        clash = fresh.join(touching, on=["user_id", "movie_id"], how="inner", suffix="_old")
        new_wins = clash.filter(pl.col("ts") > pl.col("ts_old"))
        new_loses = clash.filter(pl.col("ts") <= pl.col("ts_old")).select(cols)
        replaced = new_wins.select(
            "user_id", "movie_id", pl.col("rating_old").alias("rating"), pl.col("ts_old").alias("ts")
        )
        added = fresh.join(new_loses, on=cols, how="anti")
        superseded = result.duplicates_superseded + new_loses.height
        report = quality.build_report(
            dataset=f"{meta.get('dataset')} + {ratings_file.name}",
            result=result,
            movies=quality.movie_issues(store.items.select("movie_id", "title", "genres", "year")),
            tags={"count": 0},
            schema={"ratings": _schema_of(new)},
            thresholds=thresholds,
            ts_range=(result.kept["ts"].min(), result.kept["ts"].max()) if result.kept.height else (None, None),  # type: ignore[arg-type]
            now_ts=now,
        )
        report["ratings"] = {
            "in": result.rows_in,
            "added": added.height,
            "skipped_identical": skipped,
            "quarantined": result.quarantined,
            "duplicates_superseded": superseded,
            "replaced_stored": replaced.height,
            "equation": f"{result.rows_in} = {added.height} + {skipped} + {result.quarantined} + {superseded}"
            " (added + skipped identical + quarantined + superseded)",
            "balanced": result.rows_in == added.height + skipped + result.quarantined + superseded,
        }
        quality.enforce(report, str(ratings_file))
    if added.height == 0:
        return BootstrapResult(
            created=False,
            message=f"no new ratings in {ratings_file.name} ({skipped} identical to stored rows, "
            f"{result.quarantined} quarantined, {superseded} superseded); no new version",
            report=report,
            rows_in=result.rows_in,
            seconds=time.perf_counter() - t0,
            **base,  # type: ignore[arg-type]
        )
    with timer("features"):
        cut_ts = int(meta["split"]["cut_ts"])
        if replaced.height:
            gone = replaced.select(quality.pair_key()).to_series().implode()
            existing = existing.filter(~quality.pair_key().is_in(gone))
        kept_all = pl.concat([existing, added.select(cols)])
        users = features.user_index(kept_all["user_id"], previous=store.users)
        items = store.items.select("item_idx", "movie_id", "title", "genres", "year")
        side = (
            pl.read_parquet(store.path / "item_side.parquet").cast(ITEM_SIDE_SCHEMA),  # type: ignore[arg-type]
            pl.read_parquet(store.path / "side_features.parquet").cast(SIDE_FEATURES_SCHEMA),  # type: ignore[arg-type]
        )
        line = (pl.lit(None, dtype=pl.Int64)).alias("line")
        quarantine = pl.concat(
            [
                result.quarantine,
                new_loses.with_columns(line, pl.lit(quality.DUPLICATE_REASON).alias("reason")),
                replaced.with_columns(line, pl.lit("replaced_by_later_rating").alias("reason")),
            ],
            how="diagonal_relaxed",
        )
        frames = _build_frames(kept_all, items, users, cut_ts, side, quarantine)
    h_before, s_before = store.history.height, store.stream.height
    entry = {
        "file": str(ratings_file.resolve()),
        "sha256": checksum,
        "parent_version": version_name(store.version),
        "rows_in": result.rows_in,
        "added": added.height,
        "skipped_identical": skipped,
        "quarantined": result.quarantined,
        "duplicates_superseded": superseded,
        "replaced_stored": replaced.height,
        "history_added": frames.history.height - h_before,
        "stream_added": frames.stream.height - s_before,
        "appended_at": _iso(now),
    }
    counts = _counts(frames, meta["counts"]["ratings_in"] + result.rows_in, report["ratings"], meta["counts"]["tags"])
    counts["quarantined"] = meta["counts"]["quarantined"] + result.quarantined
    counts["duplicates_superseded"] = meta["counts"]["duplicates_superseded"] + superseded + replaced.height
    split = {**meta["split"], "history_ratings": frames.history.height, "stream_ratings": frames.stream.height}
    metadata = {
        **meta,
        "counts": counts,
        "split": split,
        "created_at": _iso(now),
        "appended": [*meta.get("appended", []), entry],
    }

    def message(name: str) -> str:
        return f"appended {added.height} ratings from {ratings_file.name} as {name}"

    return _publish(store_dir, reports_dir, frames, metadata, report, timer, t0, result.rows_in, message)
