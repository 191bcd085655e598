"""Micro-batching of the full-catalogue mat-vec across concurrent requests ("batch what is waiting").

Scoring one user reads the whole item decoder (87,585 x 64 float32 = 22 MB):
memory-bound, ~2 ms on this CPU, the largest single cost of an uncached
recommendation. Requests that are in flight at the same moment can share that
read. :class:`ScoreBatcher` does it without a timer or a fixed delay:

* a request that finds no batch running becomes the *leader*: it takes every
  waiting request for the same decoder (up to ``max_batch``, its own first),
  scores them all in one pass, hands each its vector, and returns;
* a request that arrives while a batch runs waits; when the batch ends the
  first waiting request is promoted to leader and takes everything that
  queued up meanwhile.

A lone request therefore runs at once (no added latency), and under load the
batch size follows the concurrency by itself.

**Same bits as the single path.** An OpenBLAS GEMM over several users does
not round like the GEMV of one user (different kernels, different summation
order), so a batched GEMM would change scores in the last bits and, through
the 4-decimal rounding and near-ties, occasionally the lists. The shared pass
is therefore *row-blocked GEMV*: for each block of ``chunk_rows`` decoder rows
(sized to stay in the 2 MiB L2), one GEMV per user on that block. Every output
element is still the same row-times-``mu`` dot product as ``decoder @ mu``
(bit-identical, checked by ``tests/test_gateway_batching.py``), while the
decoder comes from DRAM once per batch instead of once per user. Measured on
this 2-core EPYC at 87,585 x 64: ~2.0 ms for one user, ~0.8 ms per user at 4,
~0.65 ms at 16 (a true GEMM would be ~0.67 / ~0.25 ms, but not bit-identical).

Only ``decoder @ mu`` is batched: bias and the model's item prior (:mod:`gateway.prior`) are added
afterwards by :func:`gateway.engine.personal_scores`, the same element-wise adds on both paths, so the
batched and single lists stay bit-identical with the prior too.

Nothing is kept between batches: each request's vector is computed from the
``mu`` it read from Redis for this request, so "uncached" stays uncached and a
new state version is always scored afresh.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["ScoreBatcher", "matvec_many"]

#: Decoder rows per block: 8192 x 64 float32 = 2 MiB, the L2 of one core here.
CHUNK_ROWS = 8192


def matvec_many(decoder: np.ndarray, mus: list[np.ndarray], chunk_rows: int = CHUNK_ROWS) -> list[np.ndarray]:
    """``[decoder @ mu for mu in mus]``, bit-identical, with one pass over ``decoder`` for all of them.

    A batch of one takes the same row blocks, so a user's vector never depends on who else was in the
    batch, whatever the BLAS thread count. It equals the plain ``decoder @ mu`` bit for bit with one
    BLAS thread (how the gateway runs, gateway/_blas.py); with several, OpenBLAS splits rows
    differently for a block than for the whole matrix and the last bits may differ.

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


class _Slot:
    __slots__ = ("decoder", "error", "event", "mu", "out")

    def __init__(self, decoder: np.ndarray, mu: np.ndarray) -> None:
        self.decoder = decoder
        self.mu = mu
        self.out: np.ndarray | None = None
        self.error: BaseException | None = None
        self.event: threading.Event | None = None


class ScoreBatcher:
    """Leader/follower batching of ``decoder @ mu`` over the threads that ask at the same time.

    ``max_batch`` <= 1 turns batching off (every call is a plain mat-vec). ``batches`` and
    ``batched`` count batches run and the vectors computed in them (for the benchmark and tests).
    """

    def __init__(self, max_batch: int = 32, chunk_rows: int = CHUNK_ROWS) -> None:
        self.max_batch = max_batch
        self.chunk_rows = chunk_rows
        self.batches = 0
        self.batched = 0
        self._lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._busy = False

    def raw_scores(self, decoder: np.ndarray, mu: np.ndarray) -> np.ndarray:
        """``decoder @ mu`` (float32 [n]), computed in a batch with whatever else is waiting."""
        if self.max_batch <= 1:
            return matvec_many(decoder, [mu], self.chunk_rows)[0]
        slot = _Slot(decoder, mu)
        with self._lock:
            self._waiting.append(slot)
            if self._busy:
                slot.event = threading.Event()
                lead = False
            else:
                self._busy = True
                lead = True
        if not lead:
            assert slot.event is not None
            slot.event.wait()
            if slot.error is not None:
                raise slot.error
            if slot.out is not None:
                return slot.out
            # woken without a result: promoted to leader of what queued meanwhile
        self._lead(slot)
        if slot.error is not None:
            raise slot.error
        assert slot.out is not None
        return slot.out

    def _lead(self, own: _Slot) -> None:
        with self._lock:
            batch = [own]
            rest = []
            for s in self._waiting:
                if s is own:
                    continue
                if s.decoder is own.decoder and len(batch) < self.max_batch:
                    batch.append(s)
                else:
                    rest.append(s)
            self._waiting = rest
        try:
            outs = matvec_many(own.decoder, [s.mu for s in batch], self.chunk_rows)
            for s, out in zip(batch, outs, strict=True):
                s.out = out
        except BaseException as exc:
            for s in batch:
                s.error = exc
        finally:
            with self._lock:
                self.batches += 1
                self.batched += len(batch)
                successor = self._waiting[0] if self._waiting else None
                if successor is None:
                    self._busy = False
            for s in batch[1:]:
                assert s.event is not None
                s.event.set()
            if successor is not None:
                assert successor.event is not None
                successor.event.set()
