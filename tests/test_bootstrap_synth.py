"""The synthetic generator: scale, shape, MovieLens compatibility, and the planted taste being real."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from bootstrap.pipeline import BootstrapOptions, run_bootstrap
from bootstrap.readers import read_dataset
from bootstrap.synth import DEFAULT_TOPICS, GENRES, RATING_SHARES, SynthData, generate, scale, write_dataset
from models.base import Recommender
from models.data import Events, Interactions
from models.ease import EASE
from models.evaluation import prequential
from models.popularity import Popularity
from reelstream.shell.cli import app


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


# --- planted taste ------------------------------------------------------------------------------


def as_interactions(data: SynthData, quantile: float = 0.8) -> Interactions:
    """The synthetic ratings split at the global time ``quantile`` as ``from_movielens`` does (``ts < cut``)."""
    r = data.ratings
    ids = data.movies["movieId"].to_numpy()
    user = (r["userId"].to_numpy() - 1).astype(np.int32)
    item = np.searchsorted(ids, r["movieId"].to_numpy()).astype(np.int32)
    rating, ts = r["rating"].to_numpy().astype(np.float32), r["timestamp"].to_numpy()
    order = np.lexsort((item, user, ts))
    ev = Events(user[order], item[order], rating[order], ts[order])
    before = ev.ts < np.quantile(ts, quantile)
    genres = [g.split("|") for g in data.movies["genres"].to_list()]
    return Interactions(ev.select(before), ev.select(~before), int(user.max()) + 1, ids.size,
                        sp.csr_matrix((ids.size, 1), dtype=np.float32), ["x"], ids, genres)  # fmt: skip


def streaming_hr(model: Recommender, data: Interactions) -> float:
    return prequential(model.fit(data), data, streaming=True).groups["overall"]["hr"]


def test_planted_taste_lets_a_collaborative_model_beat_popularity() -> None:
    # The same shape with and without taste: the lead is the planted structure, not the protocol.
    tasteful = as_interactions(generate(100_000, seed=3))
    pop, ease = streaming_hr(Popularity(), tasteful), streaming_hr(EASE(l2=200.0), tasteful)
    assert ease > 1.3 * pop, (ease, pop)  # 0.358 vs 0.229; without taste below: 0.203 vs 0.250
    assert pop > 0.05  # popularity is still a meaningful baseline
    flat = as_interactions(generate(100_000, seed=3, topics=0))
    assert streaming_hr(EASE(l2=200.0), flat) < 1.05 * streaming_hr(Popularity(), flat)


def head_share(ratings: pl.DataFrame, top: float = 0.1) -> float:
    """Share of all ratings that go to the most rated ``top`` share of the rated movies."""
    per_item = np.sort(ratings.group_by("movieId").len()["len"].to_numpy())[::-1]
    return float(per_item[: max(1, int(per_item.size * top))].sum() / ratings.height)


def test_marginals_hold_with_taste() -> None:
    data = generate(200_000, seed=2)
    r = data.ratings
    assert (r["userId"].n_unique(), data.movies.height) == scale(200_000)
    shares = r["rating"].value_counts().sort("rating")["count"].to_numpy() / r.height
    assert np.abs(shares - RATING_SHARES / RATING_SHARES.sum()).max() < 0.005
    # the popularity law: the same head as the taste-free generator, give or take what a heavy user loses by
    # exhausting their topics (sampling without replacement), and a top movie near ML-32M's 0.4%
    # (seed 2: top 10% 0.195 vs 0.224, top 1% 0.022 vs 0.025, top movie 0.46%)
    flat = generate(200_000, seed=2, topics=0).ratings
    assert head_share(r) > 0.8 * head_share(flat) and head_share(r, 0.01) > 0.8 * head_share(flat, 0.01)
    assert 0.002 < r.group_by("movieId").len()["len"].max() / r.height < 0.01  # type: ignore[operator]
    span = r["timestamp"].max() - r["timestamp"].min()  # type: ignore[operator]
    assert span > 20 * 365 * 86400


def test_genres_follow_topics_and_users_like_their_genre() -> None:
    data = generate(200_000, seed=4)
    taste = data.taste
    assert taste is not None and taste.topics == DEFAULT_TOPICS
    names = list(GENRES)
    has = np.zeros((data.movies.height, len(names)), dtype=bool)
    for i, g in enumerate(data.movies["genres"].to_list()):
        for name in g.split("|"):
            if name in GENRES:
                has[i, names.index(name)] = True
    # within its topic a movie's genres are far from the catalogue mix: genre is informative of taste
    lifts = []
    for t in range(taste.topics):
        mine = taste.movie_topic == t
        if mine.sum() >= 20:
            lifts.append((has[mine].mean(axis=0) / np.maximum(has.mean(axis=0), 1e-9)).max())
    assert np.median(lifts) > 2.0  # seed 4: 4.85
    r = data.ratings
    item = np.searchsorted(data.movies["movieId"].to_numpy(), r["movieId"].to_numpy())
    user = r["userId"].to_numpy() - 1
    rating = r["rating"].to_numpy()
    liked = has[item, taste.liked[user]] & ~has[item, taste.disliked[user]]
    disliked = has[item, taste.disliked[user]] & ~has[item, taste.liked[user]]
    assert rating[liked].mean() > rating[disliked].mean() + 0.3  # seed 4: 3.91 vs 3.14


def test_tastes_drift_over_each_users_window() -> None:
    """A user's early and late halves (by time) differ in topic mix more than two random halves do."""
    data = generate(200_000, seed=5)
    taste = data.taste
    assert taste is not None
    r = data.ratings.sort("userId", "timestamp")
    user = r["userId"].to_numpy() - 1
    topic = taste.movie_topic[np.searchsorted(data.movies["movieId"].to_numpy(), r["movieId"].to_numpy())]
    rng = np.random.default_rng(0)
    bounds = np.flatnonzero(np.diff(user, prepend=-1, append=user.max() + 1))
    by_time, by_chance = [], []
    for lo, hi in itertools.pairwise(bounds):
        if hi - lo < 40:
            continue
        mine = topic[lo:hi]
        for halves, out in (
            (np.arange(hi - lo) < (hi - lo) // 2, by_time),
            (rng.permutation(hi - lo) < (hi - lo) // 2, by_chance),
        ):
            a = np.bincount(mine[halves], minlength=taste.topics) / halves.sum()
            b = np.bincount(mine[~halves], minlength=taste.topics) / (~halves).sum()
            out.append(0.5 * np.abs(a - b).sum())
    assert len(by_time) > 100
    # seeds 0-3: 0.34-0.36 vs 0.25-0.27 (ratio 1.33-1.36); with the end mixture = the start one, 0.99-1.0
    assert np.mean(by_time) > 1.15 * np.mean(by_chance), (np.mean(by_time), np.mean(by_chance))


def test_taste_is_deterministic_and_topics_are_checked() -> None:
    a, b = generate(5000, seed=9, topics=7), generate(5000, seed=9, topics=7)
    assert a.ratings.equals(b.ratings) and a.taste is not None and b.taste is not None
    assert np.array_equal(a.taste.slots, b.taste.slots) and np.array_equal(a.taste.movie_topic, b.taste.movie_topic)
    assert a.taste.movie_topic.max() < 7 and np.allclose(a.taste.mixture().sum(axis=1), 1.0)
    assert not generate(5000, seed=10, topics=7).ratings.equals(a.ratings)
    with pytest.raises(ValueError, match="topics must be >= 0"):
        generate(100, topics=-1)
    with pytest.raises(ValueError, match="101 topics for 100 movies"):
        generate(100, topics=101)


def test_cli_writes_the_requested_topics(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", "--ratings", "3000", "--topics", "0", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert pl.read_csv(tmp_path / "s" / "ratings.csv").equals(generate(3000, topics=0).ratings)
    bad = CliRunner().invoke(app, ["synth", "--ratings", "3000", "--topics", "-1", "--out", str(tmp_path / "t")])
    assert bad.exit_code != 0
