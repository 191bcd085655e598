"""Per-user latent state that one rating event updates in O(hidden) time.

The hybrid VAE's encoder is ``h = tanh(W_in^T x / ||x|| + b_in)`` followed by
linear heads for ``mu`` and ``log sigma^2``. Because the first layer is linear in
``x``, a user's state keeps the *un-normalised pre-activation sum*
``pre = sum_i w_i * W_in[i]`` and the squared input norm ``norm2 = sum_i w_i^2``.
A rating event changes one ``w_i``, so :func:`fold_in` costs one row of
``W_in`` however long the user's history is, and :func:`encode` gives exactly what
re-encoding the full vector gives (``pre`` is kept in float64 so thousands of
updates do not drift).

This module is numpy-only: the Faust worker and the gateway import it without
torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from schemas.ratings import LIKED_MIN_RATING

__all__ = [
    "FoldInWeights",
    "UserState",
    "cold_state",
    "encode",
    "fold_in",
    "latest_ratings",
    "rating_weight",
    "rating_weights",
    "refold",
    "refold_many",
]


#: Encoder input weight of a liked (>= 4 stars), lukewarm (3-3.5 stars) and disliked (< 3 stars) rating.
#: Measured on the prequential protocol (docs/evaluation.md), giving lukewarm and
#: disliked ratings a positive weight (0.5 / 0.25) cost HR@20 (EASE: 0.162 -> 0.156,
#: hybrid VAE: about -0.003), so they only mark the movie as seen. The weights are
#: module constants so training and fold-in can never disagree.
LIKED_WEIGHT, LUKEWARM_WEIGHT, DISLIKED_WEIGHT = 1.0, 0.0, 0.0


def rating_weight(rating: float | None) -> float:
    """The encoder input weight of one rating (``None``: not rated).

    >>> rating_weight(5.0), rating_weight(4.0), rating_weight(3.5), rating_weight(1.0), rating_weight(None)
    (1.0, 1.0, 0.0, 0.0, 0.0)
    """
    if rating is None:
        return 0.0
    if rating >= LIKED_MIN_RATING:
        return LIKED_WEIGHT
    return LUKEWARM_WEIGHT if rating >= 3.0 else DISLIKED_WEIGHT


def rating_weights(ratings: np.ndarray) -> np.ndarray:
    """:func:`rating_weight` over an array of ratings (float32), for training.

    >>> rating_weights(np.array([5.0, 3.0, 0.5])).tolist()
    [1.0, 0.0, 0.0]
    """
    r = np.asarray(ratings, dtype=np.float32)
    w = np.where(r >= LIKED_MIN_RATING, LIKED_WEIGHT, np.where(r >= 3.0, LUKEWARM_WEIGHT, DISLIKED_WEIGHT))
    return w.astype(np.float32)


@dataclass(frozen=True)
class FoldInWeights:
    """The encoder weights, exported from the torch model as numpy arrays.

    ``w_in[i]`` is item ``i``'s effective input row (its free embedding plus its
    side-feature projection), so a cold item with side features has a row too.
    """

    w_in: np.ndarray  #: float32 [n_items, hidden]
    b_in: np.ndarray  #: float32 [hidden]
    w_mu: np.ndarray  #: float32 [hidden, latent]
    b_mu: np.ndarray  #: float32 [latent]
    w_logvar: np.ndarray  #: float32 [hidden, latent]
    b_logvar: np.ndarray  #: float32 [latent]

    @property
    def hidden(self) -> int:
        return int(self.b_in.shape[0])

    @property
    def latent(self) -> int:
        return int(self.b_mu.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.w_in.shape[0])


@dataclass(frozen=True)
class UserState:
    """A user's encoder state: enough to recompute ``mu`` and ``log sigma^2`` exactly."""

    pre: np.ndarray  #: float64 [hidden], sum_i w_i * w_in[i]
    norm2: float = 0.0  #: sum_i w_i^2
    n_events: int = 0  #: events folded in (any rating, positive or not)
    extra: dict[str, float] = field(default_factory=dict)  #: reserved for model-specific scalars
    #: the latest rated movies, newest first (the co-rating component's state, models/sequence.py); the
    #: worker does not store it: the gateway orders ``rs:user:{uid}:rated`` instead
    recent: tuple[int, ...] = ()


def cold_state(weights: FoldInWeights) -> UserState:
    """The state of a user with no events."""
    return UserState(pre=np.zeros(weights.hidden, dtype=np.float64))


def fold_in(
    weights: FoldInWeights,
    state: UserState,
    item_idx: int,
    rating: float,
    previous_rating: float | None = None,
) -> UserState:
    """Apply one rating of ``item_idx``; ``previous_rating`` is the user's earlier rating of it, if any.

    A re-rating replaces the old contribution, so applying the same rating twice
    with ``previous_rating`` set to it changes nothing (idempotent).
    """
    w_new = rating_weight(rating)
    w_old = rating_weight(previous_rating)
    n_events = state.n_events + (0 if previous_rating is not None else 1)
    delta = w_new - w_old
    if delta == 0.0:
        return UserState(pre=state.pre, norm2=state.norm2, n_events=n_events, extra=state.extra, recent=state.recent)
    pre = state.pre + delta * weights.w_in[item_idx].astype(np.float64)
    norm2 = max(state.norm2 + w_new * w_new - w_old * w_old, 0.0)
    return UserState(pre=pre, norm2=norm2, n_events=n_events, extra=state.extra, recent=state.recent)


def encode(weights: FoldInWeights, state: UserState) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, log sigma^2)`` of the user's latent posterior, float32 [latent] each."""
    z = state.pre / np.sqrt(state.norm2) if state.norm2 > 0.0 else np.zeros_like(state.pre)
    h = np.tanh(z.astype(np.float32) + weights.b_in)
    return h @ weights.w_mu + weights.b_mu, h @ weights.w_logvar + weights.b_logvar


def refold(weights: FoldInWeights, latest: list[tuple[int, float]]) -> UserState:
    """The state a user reaches from ``latest`` = [(item_idx, latest rating)], one entry per rated movie.

    Equal (up to float64 rounding) to folding the user's whole event sequence: ``pre`` and ``norm2`` sum
    the *latest* rating's weight per movie (a re-rating replaces the old contribution) and ``n_events``
    counts movies (a re-rating does not add one). A hot swap re-encodes states with it.

    >>> w = FoldInWeights(np.eye(2, dtype=np.float32), *(np.zeros(k, np.float32) for k in (2,)),
    ...                   np.eye(2, dtype=np.float32), np.zeros(2, np.float32), np.eye(2, dtype=np.float32),
    ...                   np.zeros(2, np.float32))
    >>> s = refold(w, [(0, 5.0), (1, 2.0)])
    >>> s.pre.tolist(), s.norm2, s.n_events
    ([1.0, 0.0], 1.0, 2)
    """
    if not latest:
        return cold_state(weights)
    idx = np.fromiter((i for i, _ in latest), dtype=np.int64, count=len(latest))
    w = rating_weights(np.fromiter((r for _, r in latest), dtype=np.float32, count=len(latest))).astype(np.float64)
    pre = w @ weights.w_in[idx].astype(np.float64)  # one mat-vec instead of one fold_in per movie
    return UserState(pre=pre, norm2=float(w @ w), n_events=len(latest))


def latest_ratings(user: np.ndarray, item: np.ndarray, rating: np.ndarray,
                   n_items: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Each (user, movie)'s latest rating in a time-ordered event sequence: ``(user, item, rating, position)``,
    sorted by user, then position (the last event's index), so each user's movies come in the order their
    latest ratings were applied.

    >>> u, i, r, p = latest_ratings(np.array([0, 1, 0]), np.array([2, 2, 2]), np.array([1.0, 4.0, 5.0]), 3)
    >>> u.tolist(), i.tolist(), r.tolist(), p.tolist()
    ([0, 1], [2, 2], [5.0, 4.0], [2, 1])
    """
    key = user.astype(np.int64) * n_items + item.astype(np.int64)
    order = np.argsort(key, kind="stable")  # equal keys keep time order: the last of a run is the latest
    last = np.ones(len(key), dtype=bool)
    last[:-1] = key[order][1:] != key[order][:-1]
    pos = order[last]
    pos = pos[np.lexsort((pos, user[pos]))]
    return user[pos].astype(np.int64), item[pos].astype(np.int64), rating[pos], pos.astype(np.int64)


def refold_many(weights: FoldInWeights, user: np.ndarray, item: np.ndarray, rating: np.ndarray,
                n_users: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`refold` for many users at once: ``(pre [n_users, hidden] float64, norm2, n_events)``.

    ``user``/``item``/``rating`` hold one entry per rated (user, movie), its latest rating
    (:func:`latest_ratings`); ``pre`` is one sparse x dense product, so a whole HISTORY folds in at
    matrix-product speed instead of one :func:`fold_in` per event.
    """
    import scipy.sparse as sp

    w = rating_weights(rating).astype(np.float64)
    x = sp.csr_matrix((w, (user, item)), shape=(n_users, weights.n_items))
    pre = np.asarray(x @ weights.w_in.astype(np.float64))
    norm2 = np.bincount(user, weights=w * w, minlength=n_users)
    return pre, norm2, np.bincount(user, minlength=n_users)
