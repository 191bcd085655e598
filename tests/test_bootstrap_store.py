"""The store contract: round trip, clear errors, and atomicity under crashes and SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bootstrap import store
from bootstrap.pipeline import BootstrapOptions, run_bootstrap
from bootstrap.store import current_version, list_versions, load_store
from reelstream.errors import DataError
from tests.bootstrap_helpers import write_csv_dataset

NOW = 1_700_000_000


def bootstrap(settings, data: Path) -> Path:  # type: ignore[no-untyped-def]
    result = run_bootstrap(settings.store_dir, settings.reports_dir, BootstrapOptions(data), now_ts=NOW)
    assert result.path is not None
    return result.path


def test_round_trip_matches_contract(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = bootstrap(settings, write_csv_dataset(tmp_path / "ml"))
    assert (settings.store_dir / "CURRENT").read_text().strip() == "v0001" == path.name
    fs = load_store(settings.store_dir)
    assert fs.version == 1 and fs.n_items == 4 and fs.n_users == 3
    meta = fs.metadata
    assert meta["schema_version"] == 1 and meta["format"] == "movielens-csv" and meta["appended"] == []
    assert set(meta["source_checksums"]) >= {"ratings.csv", "movies.csv"}
    assert meta["split"]["history_ratings"] == fs.history.height == 5 and fs.stream.height == 2
    assert fs.items["item_idx"].to_list() == [0, 1, 2, 3] and fs.items["movie_id"].to_list() == [1, 2, 3, 5]
    assert fs.item_side.dtype == np.float32 and fs.item_side.shape == (4, len(fs.side_names))
    # "Funny" and "funny " fold to one tag; min count 5 keeps no tag in this tiny set.
    assert "genre=Action" in fs.side_names and "decade=1990" in fs.side_names
    assert not any(n.startswith("tag=") for n in fs.side_names)
    toy = fs.side_names.index("genre=Animation")
    assert fs.item_side[0, toy] == 1.0 and fs.item_side[1, toy] == 0.0
    user1 = fs.users.row(0, named=True)
    assert (user1["user_id"], user1["n_ratings"], user1["mean_rating"]) == (1, 3, pytest.approx(4.1666, 1e-3))
    assert fs.items.filter(pl.col("movie_id") == 3)["year"][0] is None


def test_tag_features_with_low_min_count(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = write_csv_dataset(tmp_path / "ml")
    run_bootstrap(settings.store_dir, settings.reports_dir, BootstrapOptions(data, min_tag_count=2), now_ts=NOW)
    fs = load_store(settings.store_dir)
    assert "tag=funny" in fs.side_names and "tag=heist" not in fs.side_names


def test_no_store_yet(tmp_path: Path) -> None:
    assert current_version(tmp_path) is None
    with pytest.raises(DataError, match=r"run `reelstream bootstrap` first"):
        load_store(tmp_path)


def test_missing_and_corrupt_files(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = bootstrap(settings, write_csv_dataset(tmp_path / "ml"))
    (path / "users.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"users\.parquet: store file is corrupt"):
        load_store(settings.store_dir)
    (path / "users.parquet").unlink()
    with pytest.raises(DataError, match=r"users\.parquet: store file is missing"):
        load_store(settings.store_dir)
    with pytest.raises(DataError, match="no store version 'v0009'"):
        load_store(settings.store_dir, "v0009")


def test_crash_midway_leaves_previous_version(settings, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data = write_csv_dataset(tmp_path / "ml")
    bootstrap(settings, data)
    before = load_store(settings.store_dir)
    real = store._write_parquet

    def failing(df: pl.DataFrame, path: Path) -> None:
        if path.name == "users.parquet":
            raise OSError("disk full")
        real(df, path)

    monkeypatch.setattr(store, "_write_parquet", failing)
    with pytest.raises(OSError, match="disk full"):
        bootstrap(settings, data)
    assert current_version(settings.store_dir) == "v0001" and list_versions(settings.store_dir) == [1]
    assert not [p for p in settings.store_dir.iterdir() if p.name.startswith(".tmp-")]
    assert load_store(settings.store_dir).history.equals(before.history)


_CHILD = """
import sys
from pathlib import Path
from bootstrap import store
from bootstrap.pipeline import BootstrapOptions, run_bootstrap

real = store._write_parquet

def pausing(df, path):
    real(df, path)
    if path.name == "ratings_stream.parquet":
        print(path.parent, flush=True)
        sys.stdin.read()  # parked here until the parent kills us

store._write_parquet = pausing
run_bootstrap(Path(sys.argv[1]), Path(sys.argv[2]), BootstrapOptions(Path(sys.argv[3])), now_ts=1_700_000_000)
"""


def test_sigkill_while_writing_leaves_previous_version(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = write_csv_dataset(tmp_path / "ml")
    bootstrap(settings, data)
    before = load_store(settings.store_dir)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(settings.store_dir), str(settings.reports_dir), str(data)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        half = Path(child.stdout.readline().strip())  # type: ignore[union-attr]
        assert half.name.startswith(".tmp-v0002") and (half / "ratings_stream.parquet").is_file()
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
        child.stdin.close()  # type: ignore[union-attr]
        child.stdout.close()  # type: ignore[union-attr]
    assert child.returncode == -signal.SIGKILL
    assert current_version(settings.store_dir) == "v0001" and list_versions(settings.store_dir) == [1]
    after = load_store(settings.store_dir)
    assert after.version == 1 and after.history.equals(before.history)
    assert json.loads((after.path / "metadata.json").read_text())["version"] == 1
    # The next run cleans the half folder up and takes the next number.
    assert bootstrap(settings, data).name == "v0002"
    assert not half.exists() and current_version(settings.store_dir) == "v0002"


def test_public_api_is_pinned() -> None:
    import bootstrap

    assert bootstrap.__all__ == ["FeatureStore", "current_version", "list_versions", "load_store"]
    assert set(store.__all__) >= {"FeatureStore", "load_store", "current_version", "write_version", "store_lock"}
