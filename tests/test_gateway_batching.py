"""Micro-batched scoring (gateway/batching.py) gives the same bits, and so the same lists, as scoring alone."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

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
from gateway.state import RedisState, UserSnapshot
from models.runtime import ModelRuntime
from reelstream.settings import Settings
from tests.user_state import synthetic_items, write_user

rng = np.random.default_rng(3)
DECODER = rng.standard_normal((20_011, 64), dtype=np.float32)
#: The same matrix stored latent-major, as the catalogue keeps its decoder (a transposed view).
DECODER_T = np.ascontiguousarray(DECODER.T).T
MUS = [rng.standard_normal(64, dtype=np.float32) for _ in range(17)]


def alone(mu: np.ndarray) -> np.ndarray:
    """``mu`` scored by itself with the batcher's default blocks: the bits every batched path must give (the
    plain ``DECODER @ mu`` is equal only to float32 rounding on an arbitrary BLAS; see below)."""
    return matvec_many(DECODER, [mu])[0]


@pytest.fixture(autouse=True)
def one_blas_thread() -> Iterator[None]:
    """As the gateway runs (gateway/_blas.py); restored afterwards for the rest of the session."""
    limit_blas_threads(1)
    yield
    limit_blas_threads(os.cpu_count() or 1)


@pytest.mark.parametrize("layout", ["item-major", "latent-major"])
@pytest.mark.parametrize("chunk_rows", [64, 1000, 8192, 50_000])
def test_a_users_vector_does_not_depend_on_the_rest_of_the_batch(layout: str, chunk_rows: int) -> None:
    decoder = DECODER if layout == "item-major" else DECODER_T
    together = matvec_many(decoder, MUS, chunk_rows)
    for i, mu in enumerate(MUS):
        assert np.array_equal(matvec_many(decoder, [mu], chunk_rows)[0], together[i])


@pytest.mark.parametrize(
    ("layout", "chunk_rows"),
    [(lay, c) for lay in ("item-major", "latent-major") for c in (64, 1000, 4096, 8192, 50_000)],
)
@pytest.mark.parametrize("batch", [1, 2, 3, 8, 17])
def test_blocked_matvec_equals_the_plain_one(layout: str, chunk_rows: int, batch: int) -> None:
    """The same values as one plain ``decoder @ mu`` to float32 rounding. Not the same bits by contract:
    BLAS may pick other kernels for other block shapes (OpenBLAS does for latent-major blocks under 4096
    items), and nothing here pins a BLAS; what the gateway relies on is the test above (a user's vector
    never depends on the batch), which holds on any BLAS because every batch takes the same blocks."""
    decoder = DECODER if layout == "item-major" else DECODER_T
    outs = matvec_many(decoder, MUS[:batch], chunk_rows)
    for mu, out in zip(MUS[:batch], outs, strict=True):
        np.testing.assert_allclose(out, decoder @ mu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("max_batch", "passes"), [(32, 1), (5, 3)])
async def test_callers_ready_together_share_passes_and_get_their_own_vectors(max_batch: int, passes: int) -> None:
    batcher = ScoreBatcher(max_batch=max_batch, chunk_rows=4096)
    outs = await asyncio.gather(*(batcher.raw_scores(DECODER_T, mu) for mu in MUS[:12]))
    for mu, out in zip(MUS[:12], outs, strict=True):
        assert np.array_equal(out, matvec_many(DECODER_T, [mu], 4096)[0])  # its own vector, as if scored alone
    assert (batcher.batches, batcher.batched) == (passes, 12)
    assert not batcher._waiting and batcher._flush_loop is None


async def test_a_flush_left_on_a_stopped_loop_does_not_strand_the_next_loops_callers() -> None:
    """An app stopped mid-request leaves a caller and a flush that never ran; a new loop must still score."""
    batcher = ScoreBatcher(max_batch=8)
    dead = asyncio.new_event_loop()
    batcher._waiting.append((DECODER, MUS[0], dead.create_future()))
    batcher._flush_loop = dead
    dead.close()
    assert np.array_equal(await batcher.raw_scores(DECODER, MUS[1]), alone(MUS[1]))
    assert not batcher._waiting and batcher._flush_loop is None and batcher.batched == 1


async def test_an_error_reaches_every_caller_of_the_pass_and_the_next_pass_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batcher = ScoreBatcher(max_batch=8)
    monkeypatch.setattr(batching, "matvec_many", lambda *a: (_ for _ in ()).throw(MemoryError("boom")))
    results = await asyncio.gather(*(batcher.raw_scores(DECODER, mu) for mu in MUS[:3]), return_exceptions=True)
    assert [type(r) for r in results] == [MemoryError] * 3
    monkeypatch.undo()
    assert np.array_equal(await batcher.raw_scores(DECODER, MUS[1]), alone(MUS[1]))
    assert (batcher.batches, batcher.batched) == (1, 1)


async def test_batching_off_is_the_plain_matvec() -> None:
    batcher = ScoreBatcher(max_batch=1)
    assert np.array_equal(await batcher.raw_scores(DECODER, MUS[0]), alone(MUS[0])) and batcher.batches == 0


async def test_batched_lists_equal_single_lists(live_settings: Settings) -> None:
    """The same users, scored alone (batch_max=1) and all at once (batch_max=32): identical responses.

    The model has an item prior (primed counts), so both paths add the same prior vector after the
    mat-vec. The batched gateway's state reads wait for each other (a barrier), so every request
    reaches the scorer in the same loop iteration and the passes really are shared.
    """
    ids = np.arange(1, 3001) * 7
    runtime = ModelRuntime.random(ids, hidden=16, latent=8, seed=4)
    runtime.metadata["item_prior"] = {"beta": 0.5, "half_life_s": 86400.0}
    runtime.primed_prior = (rng.normal(0.0, 1.0, len(ids)), 0.0)
    catalog = Catalog.build(runtime, synthetic_items(ids.tolist(), seed=6))
    client = redis.Redis.from_url(live_settings.redis_url)
    users = list(range(1, 17))
    for uid in users:
        chosen = rng.choice(ids[:400], size=12, replace=False)
        write_user(client, runtime, uid, [(int(m), float(1 + (m + uid) % 5)) for m in chosen])
    client.close()

    def gateway(batch_max: int) -> Gateway:
        s = live_settings.model_copy(update={"gateway_cache_size": 0, "gateway_batch_max": batch_max})
        state = RedisState(s.redis_url, timeout=10.0)  # a busy CI machine must not turn reads into fallbacks
        g = Gateway(s, catalog, RulesStore(s.rules_path), state, prior=ItemPrior(runtime))
        assert g.prior.current(catalog.n)[1] is not None
        g.batcher.chunk_rows = 256  # several row blocks even on this small catalogue
        return g

    single, batched = gateway(1), gateway(32)
    requests = [(u, kw) for u in users for kw in ({}, {"genres": ["Comedy"]}, {"exclude_genres": ["Drama"]})]
    alone = [(await single.recommend(u, 20, **kw)).model_dump() for u, kw in requests]

    read, all_read, arrived = batched.state.auser, asyncio.Event(), [0]

    async def read_then_wait_for_the_others(user_id: int) -> UserSnapshot:
        try:
            return await read(user_id)
        finally:  # a failed read arrives too, so the others never wait for it
            arrived[0] += 1
            if arrived[0] == len(requests):
                all_read.set()
            await all_read.wait()

    batched.state.auser = read_then_wait_for_the_others  # type: ignore[method-assign]
    together = await asyncio.gather(*(batched.recommend(u, 20, **kw) for u, kw in requests))
    assert all(r.source == "personalised" for r in together)
    assert [r.model_dump() for r in together] == alone
    assert batched.batcher.batched == len(requests) and batched.batcher.batches == -(-len(requests) // 32)
    for g in (single, batched):
        await g.state.aclose()
        g.state.close()
