"""Serve several trained VAEs as one: concatenate their units, average their decoders (numpy only)."""

from __future__ import annotations

import numpy as np
from scipy.linalg import block_diag

from models.runtime import ModelRuntime
from models.state import FoldInWeights

__all__ = ["combine_runtimes"]


def combine_runtimes(runtimes: list[ModelRuntime]) -> ModelRuntime:
    """One runtime whose logits are the mean of the members' logits, with an exact single encoder.

    The encoder ``tanh(W_in^T x / ||x|| + b_in)`` acts unit by unit and the input
    norm is shared, so stacking the members' ``W_in`` columns and block-diagonal
    heads gives every member's ``mu`` side by side; decoder rows divided by the
    number of members then average the logits.

    >>> a, b = ModelRuntime.random(np.arange(3), seed=1), ModelRuntime.random(np.arange(3), seed=2)
    >>> both = combine_runtimes([a, b])
    >>> from models.state import cold_state, encode, fold_in
    >>> def scores(rt):
    ...     state = fold_in(rt.weights, cold_state(rt.weights), 1, 5.0)
    ...     return rt.scores(encode(rt.weights, state)[0])
    >>> bool(np.allclose(scores(both), (scores(a) + scores(b)) / 2, atol=1e-6))
    True
    """
    if len(runtimes) == 1:
        return runtimes[0]
    k = np.float32(len(runtimes))
    ws = [r.weights for r in runtimes]

    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    weights = FoldInWeights(
        f32(np.hstack([w.w_in for w in ws])), f32(np.concatenate([w.b_in for w in ws])),
        f32(block_diag(*[w.w_mu for w in ws])), f32(np.concatenate([w.b_mu for w in ws])),
        f32(block_diag(*[w.w_logvar for w in ws])), f32(np.concatenate([w.b_logvar for w in ws])),
    )  # fmt: skip
    first = runtimes[0]
    return ModelRuntime(
        weights=weights,
        item_decoder=f32(np.hstack([r.item_decoder for r in runtimes]) / k),
        item_bias=f32(np.mean([r.item_bias for r in runtimes], axis=0)),
        movie_ids=first.movie_ids,
        side_in=f32(np.hstack([r.side_in for r in runtimes])),
        side_dec=f32(np.hstack([r.side_dec for r in runtimes]) / k),
        side_bias=f32(np.mean([r.side_bias for r in runtimes], axis=0)),
        metadata=dict(first.metadata),
        sequence=first.sequence,
    )
