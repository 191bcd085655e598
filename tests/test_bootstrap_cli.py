"""The ``reelstream bootstrap`` and ``synth`` commands end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bootstrap.readers import read_dataset
from bootstrap.store import list_versions, load_store
from reelstream.errors import DataError
from reelstream.shell.cli import app
from tests.bootstrap_helpers import ratings_csv, write_csv_dataset

runner = CliRunner()


def test_bootstrap_bundled_data(settings) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["bootstrap"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ratings 100,836  users 610  movies 9,742" in out
    assert "HISTORY 80,669  STREAM 20,167" in out and "100836 = 100836 + 0 + 0" in out
    assert "wrote v0001" in out
    fs = load_store(settings.store_dir)
    assert (fs.history.height + fs.stream.height, fs.n_users, fs.n_items) == (100_836, 610, 9_742)
    assert fs.metadata["split"] == {
        "method": "quantile",
        "quantile": 0.8,
        "cut_ts": 1458635171,
        "history_ratings": 80_669,
        "stream_ratings": 20_167,
    }
    assert (settings.reports_dir / "quality.json").is_file()


def test_append_via_cli_is_idempotent(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = write_csv_dataset(tmp_path / "ml")
    assert runner.invoke(app, ["bootstrap", "--data", str(data), "--cut-ts", "1041379200"]).exit_code == 0
    new = tmp_path / "new.csv"
    new.write_text(ratings_csv([(9, 5, 4.0, 1200000000)]))
    first = runner.invoke(app, ["bootstrap", "--append", str(new)])
    assert first.exit_code == 0 and "appended 1 ratings" in first.output
    second = runner.invoke(app, ["bootstrap", "--append", str(new)])
    assert second.exit_code == 0 and "already appended" in second.output
    assert list_versions(settings.store_dir) == [1, 2]
    assert load_store(settings.store_dir).metadata["split"]["method"] == "cut"


def test_quantile_edge_is_a_usage_error(settings) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["bootstrap", "--quantile", "1.0"])
    assert result.exit_code == 2 and "quantile" in result.output
    assert not settings.store_dir.exists()


def _missing(root: Path) -> tuple[Path, str]:
    return root / "nope", "nope: dataset folder does not exist"


def _unknown(root: Path) -> tuple[Path, str]:
    (root / "x").mkdir()
    (root / "x" / "data.json").write_text("{}")
    return root / "x", "x: unknown dataset format"


def _wrong_columns(root: Path) -> tuple[Path, str]:
    data = write_csv_dataset(root / "ml")
    (data / "ratings.csv").write_text("a,b,c,d\n1,1,4.0,946684800\n")
    return data, "ratings.csv:1: wrong columns"


def _non_numeric(root: Path) -> tuple[Path, str]:
    return write_csv_dataset(root / "ml", [(1, 1, 4.0, 946684800), (1, 2, "x", 946684800)]), "ratings.csv:3: column"


def _empty(root: Path) -> tuple[Path, str]:
    data = write_csv_dataset(root / "ml")
    (data / "ratings.csv").write_text("")
    return data, "ratings.csv:1: file is empty"


@pytest.mark.parametrize("make", [_missing, _unknown, _wrong_columns, _non_numeric, _empty])
def test_bad_input_raises_and_writes_nothing(settings, tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    data, expected = make(tmp_path)
    result = runner.invoke(app, ["bootstrap", "--data", str(data)])
    assert isinstance(result.exception, DataError)
    message = str(result.exception)
    assert expected in message and "\n" not in message
    assert not settings.store_dir.exists() and not settings.reports_dir.exists()


def test_exit_code_2_and_one_line_message(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "REELSTREAM_VAR_DIR": str(settings.var_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "reelstream.shell.cli", "bootstrap", "--data", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "missing: dataset folder does not exist" in proc.stderr
    assert not settings.store_dir.exists()


def test_synth_command(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    result = runner.invoke(app, ["synth", "--ratings", "5000", "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    ds = read_dataset(out)
    assert ds.ratings.height == 5000
    bad = runner.invoke(app, ["synth", "--ratings", "5000", "--out", str(out), "--users", "2", "--movies", "10"])
    assert bad.exit_code != 0 and "do not fit" in bad.output
