"""The versioned feature store: the contract between the bootstrap and every consumer.

Layout (``settings.store_dir``)::

    CURRENT                      text "v0001": the version readers use
    v0001/metadata.json          schema_version, version, dataset, format, source,
                                 source_checksums, source_files ([size, mtime_ns] per file:
                                 the dataset's identity, bootstrap.pipeline.source_change),
                                 counts, split, created_at, appended
    v0001/ratings_history.parquet  user_id i64, movie_id i64, rating f32, ts i64,
                                   user_idx i32, item_idx i32  (sorted by ts, user_id, movie_id)
    v0001/ratings_stream.parquet   same columns and order (the replay order)
    v0001/items.parquet          item_idx i32, movie_id i64, title str, genres list[str]
                                 ([] for "(no genres listed)"), year i32 (nullable),
                                 n_ratings i32, mean_rating f32 (HISTORY; null when unrated)
    v0001/users.parquet          user_idx i32, user_id i64, n_ratings i32, mean_rating f32,
                                 first_ts i64, last_ts i64  (HISTORY statistics; null when none)
    v0001/item_side.parquet      item_idx i32, feature i32, value f32  (long form, sparse)
    v0001/side_features.parquet  feature i32, name str, kind str
    v0001/quality.json, quarantine.parquet

Why the ceremony: a version is built in a hidden ``.tmp-*`` folder, every file is
fsynced, the folder is renamed to ``vNNNN`` and only then is ``CURRENT`` replaced
atomically. A crash or ``kill -9`` at any point leaves the previous version and
``CURRENT`` untouched; readers never see a half-written version.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
import scipy.sparse as sp

from reelstream.errors import DataError

__all__ = [
    "CURRENT_FILE",
    "ITEMS_SCHEMA",
    "ITEM_SIDE_SCHEMA",
    "QUARANTINE_SCHEMA",
    "RATINGS_SCHEMA",
    "SCHEMA_VERSION",
    "SIDE_FEATURES_SCHEMA",
    "USERS_SCHEMA",
    "FeatureStore",
    "StoreFrames",
    "current_version",
    "fsync_path",
    "list_versions",
    "load_store",
    "store_lock",
    "version_name",
    "write_version",
]

#: Bumped when a file's columns or meaning change; readers refuse other versions.
SCHEMA_VERSION = 1
CURRENT_FILE = "CURRENT"
_TMP_PREFIX = ".tmp-"
_VERSION_RE = re.compile(r"^v(\d{4,})$")
#: lz4 writes fast and reads fast; the store is rewritten per version, not archived.
_COMPRESSION: Final = "lz4"

RATINGS_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "movie_id": pl.Int64(),
    "rating": pl.Float32(),
    "ts": pl.Int64(),
    "user_idx": pl.Int32(),
    "item_idx": pl.Int32(),
}
ITEMS_SCHEMA: dict[str, pl.DataType] = {
    "item_idx": pl.Int32(),
    "movie_id": pl.Int64(),
    "title": pl.String(),
    "genres": pl.List(pl.String()),
    "year": pl.Int32(),
    "n_ratings": pl.Int32(),
    "mean_rating": pl.Float32(),
}
USERS_SCHEMA: dict[str, pl.DataType] = {
    "user_idx": pl.Int32(),
    "user_id": pl.Int64(),
    "n_ratings": pl.Int32(),
    "mean_rating": pl.Float32(),
    "first_ts": pl.Int64(),
    "last_ts": pl.Int64(),
}
ITEM_SIDE_SCHEMA: dict[str, pl.DataType] = {
    "item_idx": pl.Int32(),
    "feature": pl.Int32(),
    "value": pl.Float32(),
}
SIDE_FEATURES_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.Int32(),
    "name": pl.String(),
    "kind": pl.String(),
}
#: Rejected input rows; ``line`` is the 1-based line in the source file (null when unknown).
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Int64(),
    "movie_id": pl.Int64(),
    "rating": pl.Float32(),
    "ts": pl.Int64(),
    "line": pl.Int64(),
    "reason": pl.String(),
}

_FILES: dict[str, dict[str, pl.DataType]] = {
    "ratings_history.parquet": RATINGS_SCHEMA,
    "ratings_stream.parquet": RATINGS_SCHEMA,
    "items.parquet": ITEMS_SCHEMA,
    "users.parquet": USERS_SCHEMA,
    "item_side.parquet": ITEM_SIDE_SCHEMA,
    "side_features.parquet": SIDE_FEATURES_SCHEMA,
    "quarantine.parquet": QUARANTINE_SCHEMA,
}


def version_name(version: int) -> str:
    """``3`` -> ``"v0003"``."""
    return f"v{version:04d}"


def _parse_version(name: str) -> int | None:
    m = _VERSION_RE.match(name)
    return int(m.group(1)) if m else None


def list_versions(store_dir: Path) -> list[int]:
    """Every complete version folder, ascending (hidden temp folders are not versions)."""
    if not store_dir.is_dir():
        return []
    found = (_parse_version(p.name) for p in store_dir.iterdir() if p.is_dir())
    return sorted(v for v in found if v is not None)


def current_version(store_dir: Path) -> str | None:
    """The version name ``CURRENT`` points at, or ``None`` when there is no store yet."""
    path = store_dir / CURRENT_FILE
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if _parse_version(name) is None:
        raise DataError(f"corrupt CURRENT file (holds {name[:40]!r}, expected vNNNN)", path=path)
    return name


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class StoreFrames:
    """Everything one version holds, before it is written."""

    history: pl.DataFrame
    stream: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    item_side: pl.DataFrame
    side_features: pl.DataFrame
    quarantine: pl.DataFrame

    def by_file(self) -> dict[str, pl.DataFrame]:
        """The frames keyed by their file name in the version folder."""
        return {
            "ratings_history.parquet": self.history,
            "ratings_stream.parquet": self.stream,
            "items.parquet": self.items,
            "users.parquet": self.users,
            "item_side.parquet": self.item_side,
            "side_features.parquet": self.side_features,
            "quarantine.parquet": self.quarantine,
        }


def _conform(df: pl.DataFrame, schema: Mapping[str, pl.DataType], name: str) -> pl.DataFrame:
    """Select and cast to the contract's columns, so a writer bug cannot change the schema."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: so a rename into it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    """One file of a version (a seam the crash tests patch)."""
    df.write_parquet(path, compression=_COMPRESSION, statistics=True)
    fsync_path(path)


def _write_json(doc: Mapping[str, Any], path: Path) -> None:
    with path.open("w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _replace_current(store_dir: Path, name: str) -> None:
    """Point ``CURRENT`` at ``name`` with an atomic rename (readers see old or new, never empty)."""
    tmp = store_dir / f"{_TMP_PREFIX}CURRENT-{uuid.uuid4().hex}"
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(store_dir / CURRENT_FILE)
    fsync_path(store_dir)


@contextmanager
def store_lock(store_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the store so two bootstraps cannot race for a version number.

    The lock is an ``flock`` (released by the kernel if the holder dies), so a killed
    run never leaves the store locked. Stale temp folders of killed runs are removed
    here, while nobody else can be writing.
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    with (store_dir / ".lock").open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            for stale in store_dir.glob(_TMP_PREFIX + "*"):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def write_version(
    store_dir: Path,
    frames: StoreFrames,
    metadata: Mapping[str, Any],
    quality: Mapping[str, Any],
) -> Path:
    """Write a new version atomically and make it CURRENT; return its folder.

    The caller holds :func:`store_lock`. ``metadata`` gets ``schema_version`` and
    ``version`` filled in here, so they always match the folder name.
    """
    version = max(list_versions(store_dir), default=0) + 1
    name = version_name(version)
    tmp = store_dir / f"{_TMP_PREFIX}{name}-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    try:
        for file_name, df in frames.by_file().items():
            _write_parquet(_conform(df, _FILES[file_name], file_name), tmp / file_name)
        meta = {"schema_version": SCHEMA_VERSION, "version": version, **metadata}
        meta["schema_version"], meta["version"] = SCHEMA_VERSION, version
        _write_json(quality, tmp / "quality.json")
        _write_json(meta, tmp / "metadata.json")
        fsync_path(tmp)
        final = store_dir / name
        tmp.rename(final)
        fsync_path(store_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_current(store_dir, name)
    return final


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class FeatureStore:
    """One loaded store version: frames as written plus the side features as a CSR matrix."""

    path: Path
    version: int
    metadata: dict[str, Any]
    history: pl.DataFrame
    stream: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    item_side: sp.csr_matrix
    side_names: list[str]

    @property
    def n_items(self) -> int:
        """Catalogue size (every movie of movies.csv, rated or not)."""
        return self.items.height

    @property
    def n_users(self) -> int:
        """Number of users with at least one kept rating (HISTORY or STREAM)."""
        return self.users.height


def _read_checked(path: Path, schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    if not path.is_file():
        raise DataError("store file is missing (re-run `reelstream bootstrap`)", path=path)
    try:
        df = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataError(f"store file is corrupt ({type(exc).__name__}: {str(exc)[:120]})", path=path) from exc
    got = dict(df.schema)
    if list(got) != list(schema) or any(got[c] != t for c, t in schema.items()):
        raise DataError(f"store file has schema {got}, expected {dict(schema)}", path=path)
    return df


def load_store(store_dir: Path, version: str | None = None) -> FeatureStore:
    """Load ``version`` (default: the one ``CURRENT`` names) and check it against the contract."""
    name = version or current_version(store_dir)
    if name is None:
        raise DataError("no feature store yet: run `reelstream bootstrap` first", path=store_dir)
    num = _parse_version(name)
    path = store_dir / name
    if num is None or not path.is_dir():
        have = [version_name(v) for v in list_versions(store_dir)]
        raise DataError(f"no store version {name!r} (have {have})", path=store_dir)
    meta_path = path / "metadata.json"
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError("store file is missing (re-run `reelstream bootstrap`)", path=meta_path) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"store metadata is corrupt ({exc})", path=meta_path) from exc
    if metadata.get("schema_version") != SCHEMA_VERSION:
        raise DataError(
            f"store schema_version {metadata.get('schema_version')!r}, this code reads {SCHEMA_VERSION}",
            path=meta_path,
        )
    history = _read_checked(path / "ratings_history.parquet", RATINGS_SCHEMA)
    stream = _read_checked(path / "ratings_stream.parquet", RATINGS_SCHEMA)
    items = _read_checked(path / "items.parquet", ITEMS_SCHEMA)
    users = _read_checked(path / "users.parquet", USERS_SCHEMA)
    side = _read_checked(path / "item_side.parquet", ITEM_SIDE_SCHEMA)
    names = _read_checked(path / "side_features.parquet", SIDE_FEATURES_SCHEMA).sort("feature")
    n_side = names.height
    if side.height and (
        int(side["item_idx"].to_numpy().max()) >= items.height or int(side["feature"].to_numpy().max()) >= n_side
    ):
        raise DataError("indexes outside items/side_features", path=path / "item_side.parquet")
    item_side = sp.csr_matrix(
        (
            side["value"].to_numpy().astype(np.float32, copy=False),
            (side["item_idx"].to_numpy(), side["feature"].to_numpy()),
        ),
        shape=(items.height, n_side),
        dtype=np.float32,
    )
    return FeatureStore(
        path=path,
        version=num,
        metadata=metadata,
        history=history,
        stream=stream,
        items=items,
        users=users,
        item_side=item_side,
        side_names=names["name"].to_list(),
    )
