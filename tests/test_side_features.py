"""A movie announced by a ``MovieEvent`` gets exactly the side-feature row training gives it.

The bundled ml-latest-small is bootstrapped (the real CLI) and a hybrid VAE trained on it for
one epoch. The movie under test is a real catalogue movie nobody rated in HISTORY, so training
gave it rows from its side features only (``side @ side_in``, ``side @ side_dec``,
``side @ side_bias``). The worker's model is the trained one without that movie; the movie is
then announced through the ``MovieProcessor`` (title, genres, year and its raw tags.csv tags) and
rated once through the ``RatingProcessor``, and the rows the worker adds, and the row the
gateway's catalogue adds, must be the trained ones.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bootstrap.store import FeatureStore, load_store
from gateway.catalog import Catalog, NewMovie
from models.data import Interactions, from_movielens, from_store
from models.hybrid_vae import HybridVAE
from models.runtime import ModelRuntime
from reelstream.errors import ModelError
from schemas import redis_keys as keys
from schemas.movie_record import decode_movie
from schemas.side_features import META_NAMES, META_YEAR_RANGE, YEAR_SCALED, SideEncoder
from schemas.wire import codec_for
from streams.events import rating_event, user_key
from streams.processor import Message, MovieProcessor, RatingProcessor
from streams.store import MemoryFeatureTables
from tests.stream_support import bootstrap_var

DATA = Path(__file__).resolve().parents[1] / "data" / "ml-latest-small"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    return load_store(bootstrap_var(tmp_path_factory.mktemp("side-var")) / "store")


@pytest.fixture(scope="module")
def data(store: FeatureStore) -> Interactions:
    return from_store(store)


@pytest.fixture(scope="module")
def trained(data: Interactions) -> ModelRuntime:
    return HybridVAE(hidden=16, latent=8, max_epochs=1, val_fraction=0.0, seed=0).fit(data).runtime_


def _raw_tags(movie_id: int, cut_ts: int) -> list[str]:
    """The movie's tags.csv tags up to the cut, as written (case and spaces kept)."""
    with (DATA / "tags.csv").open(newline="") as fh:
        return [r["tag"] for r in csv.DictReader(fh) if int(r["movieId"]) == movie_id and int(r["timestamp"]) <= cut_ts]


def _cold_movie(data: Interactions) -> int:
    """item_idx of the never-rated (in HISTORY) movie with a year and a tag and the most side features."""
    tag_cols = [i for i, n in enumerate(data.side_names) if n.startswith("tag=")]
    has_tag = np.asarray((data.item_side[:, tag_cols] > 0).sum(axis=1)).ravel() > 0
    year_col = data.side_names.index(YEAR_SCALED)
    has_year = np.asarray(data.item_side[:, year_col].todense()).ravel() > 0
    nnz = np.diff(data.item_side.indptr)
    candidates = np.flatnonzero(~data.known_items() & has_tag & has_year)
    assert candidates.size, "ml-latest-small has no cold movie with a year and a tag"
    return int(candidates[np.argmax(nnz[candidates])])


def _without(rt: ModelRuntime, idx: int) -> ModelRuntime:
    """The runtime minus one movie's rows (the worker's model before the movie is announced)."""
    keep = np.arange(rt.n_items) != idx
    w = rt.weights
    return ModelRuntime(
        weights=replace(w, w_in=w.w_in[keep]), item_decoder=rt.item_decoder[keep], item_bias=rt.item_bias[keep],
        movie_ids=rt.movie_ids[keep], side_in=rt.side_in, side_dec=rt.side_dec, side_bias=rt.side_bias,
        metadata=dict(rt.metadata),
    )  # fmt: skip


def test_a_movie_announced_by_a_movie_event_gets_the_row_training_gave_it(
    store: FeatureStore, data: Interactions, trained: ModelRuntime
) -> None:
    assert trained.metadata[META_NAMES] == data.side_names  # what the worker and the gateway read
    assert trained.metadata[META_YEAR_RANGE] == list(data.side_year_range or ())
    idx = _cold_movie(data)
    movie = store.items.row(idx, named=True)
    mid, cut_ts = int(movie["movie_id"]), int(store.metadata["split"]["cut_ts"])
    expected = np.asarray(data.item_side[idx].todense(), dtype=np.float32).ravel()  # the row training used
    tags = _raw_tags(mid, cut_ts)
    assert tags and movie["year"] is not None and movie["genres"]

    runtime = _without(trained, idx)
    catalog = Catalog.build(runtime, None)  # the gateway's catalogue before the announcement
    tables = MemoryFeatureTables()
    announce = MovieProcessor(runtime, tables, topic="movies")
    event = {"movie_id": mid, "title": movie["title"], "genres": list(movie["genres"]), "year": movie["year"],
             "tags": tags}  # fmt: skip
    plan = announce.plan([Message("movies", 0, 0, codec_for("MovieEvent").encode(event))])
    assert (plan.applied, plan.dead) == (1, []) and announce.commit(plan)

    ratings = RatingProcessor(runtime, tables, topic="ratings", min_ts_ms=0, max_future_ms=10**15,
                              half_life_s=86400.0)  # fmt: skip
    rating = rating_event(7, mid, 4.5, cut_ts * 1000 + 1, "live")
    msg = Message("ratings", 0, 0, codec_for("RatingEvent").encode(rating), key=user_key(7))
    assert ratings.run([msg]).applied == 1
    new = runtime.item_index(mid)
    assert new == runtime.n_items - 1

    # the vector: exactly bootstrap's row; the rows: what training computed from it
    record = decode_movie(tables.hashes[keys.movie(mid)])
    assert np.array_equal(ratings.side.vector(record.genres, record.year, record.tags), expected)
    assert expected[data.side_names.index(YEAR_SCALED)] > 0 and (expected > 0).sum() >= 4
    tight = {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(runtime.weights.w_in[new], trained.weights.w_in[idx], **tight)
    np.testing.assert_allclose(runtime.item_decoder[new], trained.item_decoder[idx], **tight)
    np.testing.assert_allclose(runtime.item_bias[new], trained.item_bias[idx], **tight)

    # the gateway: the same record, the same encoder, the same decoder row
    side = catalog.side.vector(record.genres, record.year, record.tags)
    assert np.array_equal(side, expected)
    served = catalog.with_new_movies([NewMovie(mid, record.title, record.genres, record.year, side)])
    np.testing.assert_array_equal(served.decoder[served.index(mid)], runtime.item_decoder[new])


def test_encoder_scales_years_as_bootstrap_and_refuses_names_that_do_not_fit(data: Interactions) -> None:
    meta = {META_NAMES: data.side_names, META_YEAR_RANGE: list(data.side_year_range or ())}
    enc = SideEncoder.from_metadata(meta, len(data.side_names))
    col = data.side_names.index(YEAR_SCALED)
    lo, hi = data.side_year_range or (0, 1)
    year = (lo + hi) // 2
    assert enc.vector([], year)[col] == np.float32((year - lo) / (hi - lo))  # the documented formula
    assert enc.vector([], lo - 50)[col] == 0.0 and enc.vector([], hi + 50)[col] == 1.0  # clipped to training's range
    assert enc.unknown_names == []
    n = len(data.side_names)
    with pytest.raises(ModelError, match=f"{n} side features, but the model has {n - 1} rows"):
        SideEncoder.from_metadata(meta, n - 1)


def test_a_movielens_folder_read_for_training_has_the_feature_stores_side_features() -> None:
    """``reelstream train --data DIR`` (models.data.from_movielens) builds the rows the worker and the gateway
    build for an announced movie (schemas.side_features): every movie's row is SideEncoder.vector of its
    genres, year and tags up to the split, so such a model serves new movies like a store-trained one."""
    data = from_movielens(DATA, split_quantile=0.8)
    cut_ts = int(data.metadata["split_ts"])
    assert data.side_names and not SideEncoder(tuple(data.side_names)).unknown_names
    meta = {META_NAMES: data.side_names, META_YEAR_RANGE: list(data.side_year_range or ())}
    encoder = SideEncoder.from_metadata(meta, len(data.side_names))
    with (DATA / "movies.csv").open(newline="") as fh:
        movies = {int(r["movieId"]): r for r in csv.DictReader(fh)}
    tags: dict[int, list[str]] = {}
    with (DATA / "tags.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if int(r["timestamp"]) <= cut_ts:
                tags.setdefault(int(r["movieId"]), []).append(r["tag"])
    sample = [i for i, mid in enumerate(data.movie_ids) if int(mid) in tags][:40] + list(range(40))
    for idx in sample:
        row = movies[int(data.movie_ids[idx])]
        title, genres = row["title"].strip(), row["genres"]
        year = int(title[-5:-1]) if title.endswith(")") and title[-5:-1].isdigit() else None
        want = encoder.vector([] if genres == "(no genres listed)" else genres.split("|"), year,
                              tags.get(int(data.movie_ids[idx]), []))  # fmt: skip
        np.testing.assert_allclose(np.asarray(data.item_side[idx].todense()).ravel(), want, atol=1e-6)
