"""Micro-batching of the full-catalogue mat-vec across concurrent requests ("batch what is ready").

Scoring one user reads the whole item decoder (87,585 x 64 float32 = 22 MB):
memory-bound, the largest single cost of an uncached recommendation on a big
catalogue. Requests that are ready at the same moment can share that read.

Recommendations run on the event loop (no threadpool, see :mod:`gateway.state`),
so "the same moment" is one loop iteration: :meth:`ScoreBatcher.raw_scores`
queues the user's ``mu`` and, if no flush is pending, schedules one with
``call_soon``. The flush runs after every callback already ready in this
iteration, so all the requests whose Redis replies arrived together (while the
loop was busy with earlier requests) are scored in one pass. A lone request
waits one loop iteration (microseconds), never a timer; the batch size follows
the load by itself (measured, ``bench/gateway.py``: ~1.1 users per pass at 4
connections, ~3 at 16).

**Same bits as the single path.** The shared pass is *blocked GEMV*: for each
block of ``chunk_rows`` items, one GEMV per user on that block, the same calls
whether the batch holds one user or thirty, so a user's scores never depend on
who else was in the batch, on any BLAS (checked by ``tests/test_gateway_batching.py``); they equal a
plain ``decoder @ mu`` to float32 rounding (with OpenBLAS's kernels today, bit for bit at the default
blocks, but no BLAS promises that and no test relies on it). A batched GEMM
would round differently and, through near-ties, occasionally change lists. The
catalogue keeps the decoder latent-major (:class:`gateway.catalog.Catalog`),
which makes each GEMV a streaming pass over contiguous rows: measured on this
2-core EPYC at 87,585 x 64 with one BLAS thread, ~0.5 ms for one user
(0.63-0.84 ms item-major) and ~0.4 ms per user in a batch of 4.

Only ``decoder @ mu`` is batched: bias and the model's item prior (:mod:`gateway.prior`) are added
afterwards by :func:`gateway.engine.personal_scores`, the same element-wise adds on both paths.
Nothing is kept between batches: each request's vector is computed from the ``mu`` it read from
Redis for this request, so "uncached" stays uncached and a new state version is always scored afresh.
"""

from __future__ import annotations

import asyncio

import numpy as np

__all__ = ["ScoreBatcher", "matvec_many"]

#: Items per block: 8192 x 64 float32 = 2 MiB, the L2 of one core here.
CHUNK_ROWS = 8192


def matvec_many(decoder: np.ndarray, mus: list[np.ndarray], chunk_rows: int = CHUNK_ROWS) -> list[np.ndarray]:
    """``[decoder @ mu for mu in mus]`` with one pass over ``decoder`` for all of them.

    A batch of one takes the same blocks and the same calls, so a user's vector never depends on who
    else was in the batch, on any BLAS. It equals the plain ``decoder @ mu`` to float32 rounding (the
    same bits with OpenBLAS for blocks of >= 4096 items, but no BLAS promises that;
    tests/test_gateway_batching.py).

    >>> d = np.arange(12, dtype=np.float32).reshape(6, 2)
    >>> [v.tolist() for v in matvec_many(d, [np.ones(2, np.float32), np.array([1, 0], np.float32)], 4)]
    [[1.0, 5.0, 9.0, 13.0, 17.0, 21.0], [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]]
    """
    n = decoder.shape[0]
    mus = [np.ascontiguousarray(mu, dtype=np.float32) for mu in mus]
    outs = [np.empty(n, dtype=np.float32) for _ in mus]
    for a in range(0, n, chunk_rows):
        block = decoder[a : a + chunk_rows]
        for mu, out in zip(mus, outs, strict=True):
            np.matmul(block, mu, out=out[a : a + chunk_rows])
    return outs


class ScoreBatcher:
    """Batches ``decoder @ mu`` over the requests that ask within one event-loop iteration.

    ``max_batch`` <= 1 turns batching off (every call is scored at once). ``batches`` and ``batched``
    count the passes run and the vectors computed in them (``GET /stats`` reports them).
    """

    def __init__(self, max_batch: int = 32, chunk_rows: int = CHUNK_ROWS) -> None:
        self.max_batch = max_batch
        self.chunk_rows = chunk_rows
        self.batches = 0
        self.batched = 0
        self._waiting: list[tuple[np.ndarray, np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # the loop a flush is scheduled on

    async def raw_scores(self, decoder: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """``decoder @ mu`` (float32 [n]), computed in one pass with whatever else is ready."""
        if self.max_batch <= 1:
            return matvec_many(decoder, [mu], self.chunk_rows)[0]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._waiting.append((decoder, mu, future))
        if self._flush_loop is not loop:  # none pending, or one on a loop that has gone (a stopped app)
            self._flush_loop = loop
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._flush_loop is loop:
            self._flush_loop = None
        # callers from another (stopped) loop can never be answered: they are dropped, not scored
        waiting = [w for w in self._waiting if w[2].get_loop() is loop]
        self._waiting = [w for w in self._waiting if w[2].get_loop() is not loop and not w[2].get_loop().is_closed()]
        while waiting:
            decoder = waiting[0][0]
            batch = [w for w in waiting if w[0] is decoder][: self.max_batch]
            taken = {id(w) for w in batch}
            waiting = [w for w in waiting if id(w) not in taken]
            live = [w for w in batch if not w[2].cancelled()]  # a client that went away
            if not live:
                continue
            try:
                outs = matvec_many(decoder, [mu for _, mu, _ in live], self.chunk_rows)
            except Exception as exc:  # every caller gets the error, the loop goes on
                for _, _, future in live:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.batched += len(live)
            for (_, _, future), out in zip(live, outs, strict=True):
                future.set_result(out)
