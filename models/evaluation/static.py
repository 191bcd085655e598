"""Static next-period evaluation: one list per user at the split, scored against all STREAM positives."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.base import Recommender
from models.data import POSITIVE, Interactions
from models.evaluation.metrics import top_k

__all__ = ["NextPeriodResult", "next_period"]


@dataclass
class NextPeriodResult:
    model: str
    users: int
    recall: float  #: Recall@k, hits / min(k, n_targets), averaged over users
    ndcg: float  #: NDCG@ndcg_k with binary relevance, averaged over users
    k: int
    ndcg_k: int

    def as_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


def next_period(
    model: Recommender, data: Interactions, *, k: int = 20, ndcg_k: int = 100, name: str | None = None
) -> NextPeriodResult:
    """For every user with HISTORY and at least one new STREAM positive, rank once from the state at the split.

    Candidates are the catalogue (movies rated in HISTORY) minus what the user
    rated in HISTORY; targets are the user's STREAM positives among them.
    """
    catalogue = data.known_items()
    h, s = data.history, data.stream
    has_history = np.zeros(data.n_users, dtype=bool)
    has_history[h.user] = True
    users = np.unique(s.user[has_history[s.user]])
    keep = np.isin(h.user, users)
    states = model.states_from(h.select(keep))
    recalls, ndcgs = [], []
    discounts = 1.0 / np.log2(np.arange(2, ndcg_k + 2))
    for u in users.tolist():
        seen = np.zeros(data.n_items, dtype=bool)
        seen[h.item[h.user == u]] = True
        mine = (s.user == u) & (s.rating >= POSITIVE)
        targets = np.zeros(data.n_items, dtype=bool)
        targets[s.item[mine]] = True
        targets &= catalogue & ~seen
        n = int(targets.sum())
        if n == 0:
            continue
        candidates = catalogue & ~seen
        scores = model.score_one(states[u] if u in states else model.new_state())
        ranked = top_k(scores, candidates, max(k, ndcg_k))
        hits = targets[ranked]
        recalls.append(hits[:k].sum() / min(k, n))
        dcg = float((hits[:ndcg_k] * discounts[: len(hits[:ndcg_k])]).sum())
        ndcgs.append(dcg / float(discounts[: min(n, ndcg_k)].sum()))
    return NextPeriodResult(
        model=name or repr(model), users=len(recalls),
        recall=float(np.mean(recalls)) if recalls else 0.0, ndcg=float(np.mean(ndcgs)) if ndcgs else 0.0,
        k=k, ndcg_k=ndcg_k,
    )  # fmt: skip
