"""The synthetic generator: scale, shape and MovieLens compatibility."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from bootstrap.pipeline import BootstrapOptions, run_bootstrap
from bootstrap.readers import read_dataset
from bootstrap.synth import GENRES, generate, scale, write_dataset


def test_scale_matches_ml32m_and_scales_down() -> None:
    assert scale(32_000_000) == (200_948, 87_585)
    assert scale(3_200_000) == (20_095, 8_758)
    assert scale(1000, users=7, movies=300) == (7, 300)


def test_shape_is_realistic() -> None:
    # At small N the proportional catalogue caps heavy users, so give it ML-like room.
    data = generate(200_000, seed=1, movies=5000)
    r = data.ratings
    n_users, n_movies = scale(200_000, movies=5000)
    assert r.height == 200_000 and r["userId"].n_unique() == n_users
    assert data.movies.height == n_movies
    assert r.select("userId", "movieId").is_duplicated().sum() == 0
    assert set(r["rating"].unique().to_list()) <= {x / 2 for x in range(1, 11)}
    assert r["rating"].mode().to_list() == [4.0]
    per_user = r.group_by("userId").len()["len"]
    assert per_user.min() >= 1 and per_user.max() > 5 * per_user.median()  # long tail
    per_item = np.sort(r.group_by("movieId").len()["len"].to_numpy())[::-1]
    top = per_item[: len(per_item) // 10].sum() / per_item.sum()
    assert top > 0.3  # the most popular 10% of movies take a large share
    assert r["timestamp"].min() >= 820454400 and r["timestamp"].max() <= 1696118400
    genres = set(data.movies["genres"].str.split("|").explode().to_list())
    assert genres <= {*GENRES, "(no genres listed)"}
    assert data.movies["title"].str.contains(r"\(\d{4}\)$").all()


def test_deterministic_and_readable(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    a, b = generate(3000, seed=5), generate(3000, seed=5)
    assert a.ratings.equals(b.ratings) and a.movies.equals(b.movies)
    write_dataset(a, tmp_path / "s")
    ds = read_dataset(tmp_path / "s")
    assert ds.ratings.height == 3000 and ds.format == "movielens-csv"
    result = run_bootstrap(settings.store_dir, settings.reports_dir, BootstrapOptions(tmp_path / "s"))
    assert result.metadata["counts"]["ratings"] == 3000
    assert result.metadata["counts"]["users"] == a.ratings["userId"].n_unique()
    assert pl.read_parquet(result.path / "quarantine.parquet").height == 0  # type: ignore[operator]
