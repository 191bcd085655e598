"""The prequential (test-then-train) walk over STREAM; see ``docs/evaluation.md``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from models.base import Recommender
from models.data import POSITIVE, Events, Interactions
from models.evaluation.metrics import genre_diversity, hit_rate, ndcg, rank_of, reciprocal_rank, top_k

__all__ = ["PrequentialResult", "is_scored", "prequential"]

#: Users with at least this many HISTORY positives are "warm".
WARM_MIN_POSITIVES = 5


@dataclass
class PrequentialResult:
    """Mean metrics per user group, plus top-k list statistics over every scored event."""

    model: str
    flavour: str  #: "static", "streaming" or "retrain"
    k: int
    groups: dict[str, dict[str, float]]  #: group -> {"events", "hr", "ndcg", "mrr"}
    coverage: float  #: share of the catalogue that appears in some top-k list
    diversity: float  #: mean intra-list genre Jaccard distance
    novelty: float  #: mean -log2(share of HISTORY users who rated the item) over list items
    seconds: float
    ranks: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    retrains: int = 0  #: refits during the walk (the "retrain" flavour)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("ranks")
        return d


def is_scored(rating: float, in_catalogue: bool, seen_before: bool) -> bool:
    """Whether the walk ranks before this event: a positive rating of a catalogue movie the user had not rated.

    The one rule of every walk over STREAM, offline here and live (:mod:`streams.live_walk`).

    >>> is_scored(4.0, True, False), is_scored(2.0, True, False), is_scored(5.0, True, True)
    (True, False, False)
    """
    return rating >= POSITIVE and in_catalogue and not seen_before


def _genre_matrix(data: Interactions) -> np.ndarray:
    names = sorted({g for gs in data.genres for g in gs})
    col = {g: j for j, g in enumerate(names)}
    m = np.zeros((data.n_items, max(len(names), 1)), dtype=bool)
    for i, gs in enumerate(data.genres):
        for g in gs:
            m[i, col[g]] = True
    return m


def prequential(
    model: Recommender,
    data: Interactions,
    *,
    streaming: bool = True,
    k: int = 20,
    mrr_k: int = 100,
    name: str | None = None,
    refit: Callable[[Interactions], Recommender] | None = None,
    retrain_every_s: float | None = None,
) -> PrequentialResult:
    """Walk ``data.stream`` in time order, ranking before each positive event, then applying it.

    ``model`` must be fitted on ``data.history``. With ``streaming=False`` the
    users' states stay as they were at the split (the rated-so-far exclusion
    still grows); with ``streaming=True`` every event is folded in
    (:meth:`~models.base.Recommender.learn_one`) and passed to
    :meth:`~models.base.Recommender.observe`. ``model`` is mutated by
    ``observe``: pass a clone if it is needed afterwards.

    With ``refit`` and ``retrain_every_s`` (STREAMING only, the "retrain" flavour), at the first event
    at or after ``t0 + n * retrain_every_s`` (``t0`` the first STREAM event's time, ``n = 1, 2, ...``)
    the model is replaced by ``refit(data so far)``: HISTORY plus the STREAM events walked so far as its
    HISTORY (nothing from the current event on), and every user's state is rebuilt from all their
    events so far (:meth:`~models.base.Recommender.states_from`). The catalogue stays ``data``'s.
    """
    if (refit is None) != (retrain_every_s is None) or (refit is not None and not streaming):
        raise ValueError("refit and retrain_every_s go together, and only with streaming=True")
    if retrain_every_s is not None and retrain_every_s <= 0:
        raise ValueError(f"retrain_every_s must be positive, got {retrain_every_s}")
    started = time.perf_counter()
    catalogue = data.known_items()
    h, s = data.history, data.stream
    stream_users = np.unique(s.user)
    in_stream = np.zeros(data.n_users, dtype=bool)
    in_stream[stream_users] = True

    hist_pos = np.bincount(h.user[h.rating >= POSITIVE], minlength=data.n_users)
    hist_any = np.bincount(h.user, minlength=data.n_users)
    seen = {int(u): np.zeros(data.n_items, dtype=bool) for u in stream_users}
    last: dict[tuple[int, int], float] = {}
    keep = in_stream[h.user]
    for u, i, r in zip(h.user[keep].tolist(), h.item[keep].tolist(), h.rating[keep].tolist(), strict=True):
        seen[u][i] = True
        last[(u, i)] = r
    states = model.states_from(h.select(keep))

    item_users = np.bincount(
        np.unique(h.user.astype(np.int64) * data.n_items + h.item) % data.n_items, minlength=data.n_items
    )
    n_hist_users = max(int((hist_any > 0).sum()), 1)
    self_info = -np.log2(np.maximum(item_users, 1) / n_hist_users)
    genres = _genre_matrix(data)

    ranks, group_of = [], []
    shown = np.zeros(data.n_items, dtype=bool)
    div_sum = nov_sum = 0.0
    static_cache: dict[int, np.ndarray] = {}
    retrains = 0
    next_retrain = float(s.ts[0]) + retrain_every_s if retrain_every_s is not None and len(s) else np.inf
    for idx, (u, i, r, t) in enumerate(
        zip(s.user.tolist(), s.item.tolist(), s.rating.tolist(), s.ts.tolist(), strict=True)
    ):
        if refit is not None and t >= next_retrain:
            model, states = _retrain(refit, data, h.select(keep), idx)
            retrains += 1
            while next_retrain <= t:
                next_retrain += float(retrain_every_s or np.inf)
        user_seen = seen[u]
        if is_scored(r, bool(catalogue[i]), bool(user_seen[i])):
            if streaming:
                scores = model.score_one(states[u] if u in states else model.new_state())
            else:
                cached = static_cache.get(u)
                if cached is None:
                    cached = static_cache[u] = model.score_one(states[u] if u in states else model.new_state())
                scores = cached
            candidates = catalogue & ~user_seen
            ranks.append(rank_of(scores, candidates, i))
            group_of.append("warm" if hist_pos[u] >= WARM_MIN_POSITIVES else "cold" if hist_any[u] == 0 else "")
            top = top_k(scores, candidates, k)
            shown[top] = True
            div_sum += genre_diversity(top, genres)
            nov_sum += float(self_info[top].mean()) if len(top) else 0.0
        if streaming:
            prev = last.get((u, i))
            states[u] = model.learn_one(states[u] if u in states else model.new_state(), i, r, prev)
            model.observe(i, r, prev, ts=t)
        user_seen[i] = True
        last[(u, i)] = r

    rank_arr = np.asarray(ranks, dtype=np.int64)
    groups_arr = np.asarray(group_of)
    groups: dict[str, dict[str, float]] = {}
    for g, mask in (("overall", np.ones(len(rank_arr), bool)), ("warm", groups_arr == "warm"),
                    ("cold", groups_arr == "cold")):  # fmt: skip
        rk = rank_arr[mask]
        groups[g] = {
            "events": len(rk),
            "hr": float(np.mean([hit_rate(x, k) for x in rk])) if len(rk) else 0.0,
            "ndcg": float(np.mean([ndcg(x, k) for x in rk])) if len(rk) else 0.0,
            "mrr": float(np.mean([reciprocal_rank(x, mrr_k) for x in rk])) if len(rk) else 0.0,
        }
    n = max(len(rank_arr), 1)
    return PrequentialResult(
        model=name or repr(model),
        flavour="retrain" if refit is not None else "streaming" if streaming else "static",
        k=k,
        groups=groups,
        coverage=float(shown.sum() / max(catalogue.sum(), 1)),
        diversity=div_sum / n,
        novelty=nov_sum / n,
        seconds=time.perf_counter() - started,
        ranks=rank_arr,
        retrains=retrains,
    )


def _concat(a: Events, b: Events) -> Events:
    return Events(np.concatenate([a.user, b.user]), np.concatenate([a.item, b.item]),
                  np.concatenate([a.rating, b.rating]), np.concatenate([a.ts, b.ts]))  # fmt: skip


def _retrain(
    refit: Callable[[Interactions], Recommender], data: Interactions, stream_users_history: Events, upto: int
) -> tuple[Recommender, dict[int, object]]:
    """``refit`` on HISTORY + ``data.stream[:upto]``; the stream users' states from all their events so far."""
    seen = data.stream.select(np.arange(len(data.stream)) < upto)
    so_far = Interactions(
        history=_concat(data.history, seen), stream=seen.select(np.zeros(len(seen), bool)), n_users=data.n_users,
        n_items=data.n_items, item_side=data.item_side, side_names=data.side_names, movie_ids=data.movie_ids,
        genres=data.genres, version=data.version, metadata={**data.metadata, "retrained_upto": upto},
        side_year_range=data.side_year_range,
    )  # fmt: skip
    model = refit(so_far)
    return model, model.states_from(_concat(stream_users_history, seen))
