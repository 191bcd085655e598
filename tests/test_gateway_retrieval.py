"""Index retrieval (gateway/retrieval.py): the index against brute force, and the served path against exact.

The oracle for :meth:`ItemIndex.retrieve` is the documented score computed over every row with numpy;
the served-path checks compare a gateway with ``gateway_retrieval=index`` against one with ``exact`` on the
same Redis state, for a model trained on the bundled ml-latest-small (its decoder has the structure real
catalogues have; a random one does not cluster).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bootstrap.store import load_store
from gateway.catalog import Catalog
from gateway.corating import CoRatingTerm
from gateway.prior import ItemPrior
from gateway.retrieval import ItemIndex, sample_stride
from gateway.rules import RulesStore
from gateway.service import Gateway
from gateway.state import RedisState
from models.hybrid_vae import HybridVAE
from models.loading import load_interactions
from models.runtime import ModelRuntime
from reelstream.redis_client import redis_client
from reelstream.settings import Settings
from tests.stream_support import bootstrap_var
from tests.user_state import write_user


def _index(n: int = 3000, d: int = 8, lists: int = 40, probe: float = 1.0) -> tuple[ItemIndex, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(lists, d)).astype(np.float32)
    decoder = (centres[rng.integers(0, lists, n)] + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
    return ItemIndex.build("v/1", decoder, lists=lists, probe=probe), decoder


def test_full_probe_returns_the_brute_force_top_rows() -> None:
    index, decoder = _index()
    rng = np.random.default_rng(1)
    offset = rng.normal(size=decoder.shape[0]).astype(np.float32)
    adjust = rng.normal(size=decoder.shape[0]).astype(np.float32)
    adjust[:50] = -np.inf  # statically avoided items never come back
    latent = rng.normal(size=decoder.shape[1]).astype(np.float32)
    got, dots = index.retrieve(latent, 0.7, 100, offset=("o", lambda: offset), adjust=("a", lambda: adjust))
    oracle = decoder @ latent + offset + np.float32(0.7) * adjust
    want = np.argsort(-oracle)[:100]
    assert sorted(got.tolist()) == sorted(want.tolist())
    np.testing.assert_allclose(dots, decoder[got] @ latent, rtol=1e-5, atol=1e-5)
    assert not set(got.tolist()) & set(range(50))


def test_lists_partition_the_catalogue_and_positions_invert_the_order() -> None:
    index, decoder = _index()
    assert sorted(index.order.tolist()) == list(range(decoder.shape[0]))
    assert index.starts[0] == 0 and index.starts[-1] == decoder.shape[0]
    assert np.all(np.diff(index.starts) >= 0)
    np.testing.assert_array_equal(index.order[index.position], np.arange(decoder.shape[0]))
    np.testing.assert_array_equal(index.rows, decoder[index.order])
    np.testing.assert_array_equal(index.sample, np.arange(0, decoder.shape[0], sample_stride(decoder.shape[0])))


def test_a_partial_probe_reads_the_best_lists_and_enough_rows() -> None:
    index, decoder = _index(probe=0.1)
    latent = np.ones(decoder.shape[1], dtype=np.float32)
    bound = index.centroids @ latent
    best = np.argsort(-bound, kind="stable")
    sizes = np.diff(index.starts)
    assert index._probed(bound, 10).tolist() == best[:4].tolist()  # ceil(0.1 * 40) lists, 80 rows wanted
    wide = index._probed(bound, 200)  # 1,600 rows wanted: the best lists until they hold that many
    assert wide.tolist() == best[: len(wide)].tolist()
    assert sizes[wide].sum() >= 1600 and sizes[wide[:-1]].sum() < 1600
    zero = ("z", lambda: None)
    got, _ = index.retrieve(latent, 1.0, 200, offset=zero, adjust=zero)
    read = set(np.searchsorted(index.starts, index.position[got], side="right") - 1)
    assert read <= set(wide.tolist())  # nothing from a list that was not read


def test_extended_keeps_the_centroids_and_places_new_rows() -> None:
    index, decoder = _index()
    grown = np.vstack([decoder, decoder[:5] + 0.01]).astype(np.float32)
    bigger = index.extended("v/2", grown)
    np.testing.assert_array_equal(bigger.centroids, index.centroids)
    assert bigger.n == decoder.shape[0] + 5 and sorted(bigger.order.tolist()) == list(range(bigger.n))
    list_of = np.searchsorted(bigger.starts, bigger.position, side="right") - 1
    assert np.array_equal(list_of[decoder.shape[0] :], list_of[:5])  # near copies land in the same lists


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRuntime, object]:
    var = bootstrap_var(tmp_path_factory.mktemp("retrieval-var"))
    data = load_interactions(var / "store")
    model = HybridVAE(hidden=64, latent=16, max_epochs=6, batch_size=64, seed=1, seq_gamma=1.0).fit(data)
    return model.runtime_, load_store(var / "store")


def test_index_serves_what_exact_scoring_serves_on_the_bundled_model(
    trained: tuple[ModelRuntime, object], live_settings: Settings, tmp_path: Path
) -> None:
    runtime, store = trained
    client = redis_client(live_settings.redis_url)
    history = store.history.sort("ts")  # type: ignore[attr-defined]
    users = history["user_id"].unique().sort().head(60).to_list()
    for uid in users:
        rows = history.filter(pl.col("user_id") == uid)
        write_user(client, runtime, uid, [(m, r) for m, r in zip(rows["movie_id"], rows["rating"], strict=True)
                                          if runtime.item_index(m) is not None])  # fmt: skip
    gateways = {}
    for mode in ("exact", "index"):
        settings = live_settings.model_copy(update={"gateway_retrieval": mode, "gateway_index_min_items": 0,
                                                    "gateway_cache_size": 0})  # fmt: skip
        cat = Catalog.build(runtime, store.items)  # type: ignore[attr-defined]
        gateways[mode] = Gateway(settings, cat, RulesStore(settings.rules_path), RedisState(settings.redis_url),
                                 prior=ItemPrior(runtime), corating=CoRatingTerm(runtime))  # fmt: skip
    assert gateways["exact"].index_of(gateways["exact"].catalog) is None  # exact never builds one
    gateways["index"].build_index(gateways["index"].catalog)

    async def lists(mode: str, **kw: object) -> list[list[int]]:
        return [[m.movie_id for m in (await gateways[mode].recommend(u, 20, **kw)).items] for u in users]

    exact, indexed = asyncio.run(lists("exact")), asyncio.run(lists("index"))
    same = sum(a == b for a, b in zip(exact, indexed, strict=True)) / len(users)
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(exact, indexed, strict=True)])
    assert same >= 0.9 and overlap >= 0.99, (same, overlap)
    # requests the index cannot see are scored exactly: identical lists
    with_genres = asyncio.run(lists("index", genres=["Comedy"]))
    assert with_genres == asyncio.run(lists("exact", genres=["Comedy"]))
    for gw in gateways.values():
        asyncio.run(gw.state.aclose())
