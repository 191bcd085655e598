"""Micro-batched scoring (gateway/batching.py) gives the same bits, and so the same lists, as scoring alone."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import redis

import gateway.batching as batching
from gateway._blas import limit_blas_threads
from gateway.batching import ScoreBatcher, matvec_many
from gateway.catalog import Catalog
from gateway.prior import ItemPrior
from gateway.rules import RulesStore
from gateway.service import Gateway
from gateway.state import RedisState
from gateway.testing import synthetic_items, write_user
from models.runtime import ModelRuntime
from reelstream.settings import Settings
from tests.stream_support import wait_for

rng = np.random.default_rng(3)
DECODER = rng.standard_normal((20_011, 64), dtype=np.float32)
MUS = [rng.standard_normal(64, dtype=np.float32) for _ in range(17)]


@pytest.fixture(autouse=True)
def one_blas_thread() -> Iterator[None]:
    """As the gateway runs (gateway/_blas.py); restored afterwards for the rest of the session."""
    limit_blas_threads(1)
    yield
    limit_blas_threads(os.cpu_count() or 1)


@pytest.mark.parametrize("chunk_rows", [64, 1000, 8192, 50_000])
@pytest.mark.parametrize("batch", [1, 2, 3, 8, 17])
def test_row_blocked_matvec_is_bit_identical_to_the_plain_one(chunk_rows: int, batch: int) -> None:
    outs = matvec_many(DECODER, MUS[:batch], chunk_rows)
    for mu, out in zip(MUS[:batch], outs, strict=True):
        assert np.array_equal(out, DECODER @ mu)


def test_concurrent_callers_share_batches_and_get_their_own_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 12
    batcher = ScoreBatcher(max_batch=32, chunk_rows=4096)
    real = batching.matvec_many
    first = threading.Event()

    def slow_first(decoder, mus, chunk_rows):  # the first batch waits until everyone else has queued
        if not first.is_set():
            first.set()
            wait_for(lambda: len(batcher._waiting) >= n - 1, 10, "the other callers to queue", interval=0.001)
        return real(decoder, mus, chunk_rows)

    monkeypatch.setattr(batching, "matvec_many", slow_first)
    with ThreadPoolExecutor(n) as pool:
        outs = list(pool.map(lambda mu: batcher.raw_scores(DECODER, mu), MUS[:n]))
    for mu, out in zip(MUS[:n], outs, strict=True):
        assert np.array_equal(out, DECODER @ mu)
    assert batcher.batched == n and batcher.batches == 2  # the lone first one, then the n - 1 that queued
    assert not batcher._busy and not batcher._waiting


def test_an_error_reaches_every_request_of_the_batch_and_the_next_batch_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batcher = ScoreBatcher(max_batch=8)
    monkeypatch.setattr(batching, "matvec_many", lambda *a: (_ for _ in ()).throw(MemoryError("boom")))
    with pytest.raises(MemoryError):
        batcher.raw_scores(DECODER, MUS[0])
    monkeypatch.undo()
    assert np.array_equal(batcher.raw_scores(DECODER, MUS[1]), DECODER @ MUS[1])


def test_batching_off_is_the_plain_matvec() -> None:
    batcher = ScoreBatcher(max_batch=1)
    assert np.array_equal(batcher.raw_scores(DECODER, MUS[0]), DECODER @ MUS[0]) and batcher.batches == 0


def test_batched_lists_equal_single_lists(live_settings: Settings) -> None:
    """The same users, scored alone (batch_max=1) and 16 at a time from threads: identical responses.

    The model has an item prior (primed counts), so both paths add the same prior vector after the mat-vec.
    """
    ids = np.arange(1, 3001) * 7
    runtime = ModelRuntime.random(ids, hidden=16, latent=8, seed=4)
    runtime.metadata["item_prior"] = {"beta": 0.5, "half_life_s": 86400.0}
    runtime.primed_prior = (rng.normal(0.0, 1.0, len(ids)), 0.0)
    catalog = Catalog.build(runtime, synthetic_items(ids.tolist(), seed=6))
    client = redis.Redis.from_url(live_settings.redis_url)
    users = list(range(1, 25))
    for uid in users:
        chosen = rng.choice(ids[:400], size=12, replace=False)
        write_user(client, runtime, uid, [(int(m), float(1 + (m + uid) % 5)) for m in chosen])
    client.close()

    def gateway(batch_max: int) -> Gateway:
        s = live_settings.model_copy(update={"gateway_cache_size": 0, "gateway_batch_max": batch_max})
        g = Gateway(s, catalog, RulesStore(s.rules_path), RedisState(s.redis_url), prior=ItemPrior(runtime))
        assert g.prior.current(catalog.n)[1] is not None
        g.batcher.chunk_rows = 256  # several row blocks even on this small catalogue
        return g

    single, batched = gateway(1), gateway(32)
    requests = [(u, kw) for u in users for kw in ({}, {"genres": ["Comedy"]}, {"exclude_genres": ["Drama"]})]
    alone = [single.recommend(u, 20, **kw).model_dump() for u, kw in requests]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda r: batched.recommend(r[0], 20, **r[1]).model_dump(), requests))
    assert together == alone
    assert batched.batcher.batched == len(requests)
