"""Readers: each MovieLens layout, and every kind of unusable input."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from bootstrap.readers import detect_format, read_dataset
from reelstream.errors import DataError
from tests.bootstrap_helpers import MOVIES, ratings_csv, write_csv_dataset


def test_movielens_csv_normalised(tmp_path: Path) -> None:
    ds = read_dataset(write_csv_dataset(tmp_path / "ml"))
    assert ds.format == "movielens-csv"
    assert dict(ds.ratings.schema) == {
        "user_id": pl.Int64,
        "movie_id": pl.Int64,
        "rating": pl.Float32,
        "ts": pl.Int64,
    }
    assert ds.ratings.height == 7
    movies = {r["movie_id"]: r for r in ds.movies.iter_rows(named=True)}
    assert movies[2]["title"] == "Heat, The (1995)" and movies[2]["year"] == 1995
    assert movies[2]["genres"] == ["Action", "Crime"]
    assert movies[3]["year"] is None and movies[3]["genres"] == []
    assert ds.tags.height == 3
    assert set(ds.checksums) == {"ratings.csv", "movies.csv", "tags.csv", "links.csv"}


def test_ml_100k(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    flags = ["0"] * 19
    flags[1] = flags[5] = "1"  # Action, Comedy
    unknown = ["1"] + ["0"] * 18
    (folder / "u.item").write_bytes(
        (
            "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(flags) + "\n"
            "302|Caf\xe9 (1997)|01-Jan-1997||http://y|" + "|".join(unknown) + "\n"
        ).encode("latin-1")
    )
    ds = read_dataset(folder)
    assert ds.format == "ml-100k"
    assert ds.ratings.height == 2 and ds.ratings["rating"].to_list() == [3.0, 3.0]
    movies = {r["movie_id"]: r for r in ds.movies.iter_rows(named=True)}
    assert movies[242]["genres"] == ["Action", "Comedy"] and movies[242]["year"] == 1996
    assert movies[302]["title"] == "Café (1997)" and movies[302]["genres"] == []


def test_ml_1m(tmp_path: Path) -> None:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (folder / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Am\xe9lie (2001)::Comedy|Romance\n".encode("latin-1")
    )
    ds = read_dataset(folder)
    assert ds.format == "ml-1m"
    assert ds.ratings["movie_id"].to_list() == [1193, 661]
    movies = {r["movie_id"]: r for r in ds.movies.iter_rows(named=True)}
    assert movies[661]["title"] == "Amélie (2001)" and movies[661]["genres"] == ["Comedy", "Romance"]


# --------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as err:
        read_dataset(tmp_path / "nope")
    assert "nope" in str(err.value)


def test_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DataError, match="unknown dataset format"):
        detect_format(tmp_path)


def test_wrong_columns(tmp_path: Path) -> None:
    folder = write_csv_dataset(tmp_path / "ml")
    (folder / "ratings.csv").write_text("user,item,score,time\n1,1,4.0,946684800\n")
    with pytest.raises(DataError) as err:
        read_dataset(folder)
    msg = str(err.value)
    assert "ratings.csv:1:" in msg and "wrong columns" in msg and "userId" in msg


def test_non_numeric_rating_names_line(tmp_path: Path) -> None:
    rows = [(1, 1, 4.0, 946684800), (1, 2, "four", 978307200), (2, 1, 3.0, 1041379200)]
    folder = write_csv_dataset(tmp_path / "ml", rows)
    with pytest.raises(DataError) as err:
        read_dataset(folder)
    msg = str(err.value)
    assert "ratings.csv:3:" in msg and "'rating'" in msg and "four" in msg
    assert "\n" not in msg


def test_empty_file(tmp_path: Path) -> None:
    folder = write_csv_dataset(tmp_path / "ml")
    (folder / "ratings.csv").write_text("")
    with pytest.raises(DataError, match=r"ratings\.csv:1: file is empty"):
        read_dataset(folder)


def test_header_only(tmp_path: Path) -> None:
    folder = write_csv_dataset(tmp_path / "ml", rows=[])
    with pytest.raises(DataError, match="no data rows"):
        read_dataset(folder)


def test_empty_movies(tmp_path: Path) -> None:
    folder = write_csv_dataset(tmp_path / "ml", movies="")
    with pytest.raises(DataError, match=r"movies\.csv:1: file is empty"):
        read_dataset(folder)
    assert ratings_csv([]) and MOVIES
