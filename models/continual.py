"""Continual training: a challenger judged against the serving champion on the most recent window.

``reelstream retrain`` (docs/models.md) gathers every rating the system has applied (store HISTORY plus
the archived stream, :mod:`streams.archive_ratings`), holds out the latest ``window`` share of them by
event time, and walks that window prequentially (:func:`models.evaluation.prequential`, STREAMING) with
both models:

* the **champion** is the serving model as it runs (its weights are fixed), primed with every event
  before the window: user states folded from them, the item prior counted from them;
* the **challenger** is trained on those same before-window events only, then walked the same way.

Both go through :class:`RuntimeLearner` (the numpy runtime the worker and the gateway serve, with the
item prior kept as the worker keeps ``rs:items:prior``), so the comparison is the served behaviour of each
and nothing else. The challenger is promoted only when its HR@20 beats the champion's by more than
``margin`` (:class:`Verdict`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import numpy as np

from models.base import Recommender
from models.data import Events, Interactions
from models.evaluation import prequential
from models.runtime import ModelRuntime, trending_increment
from models.sequence import push_recent
from models.state import UserState, cold_state, encode, fold_in
from reelstream.errors import DataError, ModelError

__all__ = ["RuntimeLearner", "Verdict", "judge", "with_events"]


def with_events(
    base: Interactions, user_id: np.ndarray, movie_id: np.ndarray, rating: np.ndarray, ts: np.ndarray,
    *, window: float,
) -> Interactions:  # fmt: skip
    """``base``'s catalogue with the given events (MovieLens ids, ``ts`` in seconds), split by time:
    the latest ``window`` share of them is the STREAM, everything before it the HISTORY.

    Events of movies outside ``base``'s catalogue are dropped; users get a dense index of their own.
    ``window`` 0 puts every event in HISTORY (the final fit on all data).
    """
    if not 0.0 <= window < 1.0:
        raise DataError(f"window must be in [0, 1), got {window}")
    order_ids = np.argsort(base.movie_ids)
    pos = np.searchsorted(base.movie_ids[order_ids], movie_id)
    pos = np.minimum(pos, len(order_ids) - 1)
    known = base.movie_ids[order_ids][pos] == movie_id
    item = order_ids[pos][known].astype(np.int32)
    users, user = np.unique(np.asarray(user_id)[known], return_inverse=True)
    events = Events(user.astype(np.int32), item, np.asarray(rating, np.float32)[known], np.asarray(ts, np.int64)[known])
    order = np.lexsort((events.item, events.user, events.ts))
    events = Events(events.user[order], events.item[order], events.rating[order], events.ts[order])
    if not len(events):
        raise DataError("no rating events to train on")
    cut = int(events.ts[min(int(len(events) * (1.0 - window)), len(events) - 1)]) if window > 0 else None
    before = np.ones(len(events), dtype=bool) if cut is None else events.ts < cut
    return Interactions(
        history=events.select(before), stream=events.select(~before), n_users=len(users), n_items=base.n_items,
        item_side=base.item_side, side_names=base.side_names, movie_ids=base.movie_ids, genres=base.genres,
        version=base.version, metadata=dict(base.metadata), side_year_range=base.side_year_range,
    )  # fmt: skip


class RuntimeLearner(Recommender):
    """A fixed :class:`ModelRuntime` walked as a learner over an :class:`Interactions`' item index.

    States fold in with the runtime's encoder (as the worker folds them); scores are its logits plus the
    item prior from decayed counts (as the gateway adds them from ``rs:items:prior``) and the co-rating term
    of the user's latest movies (as the gateway adds it from ``rs:user:{uid}:rated``); :meth:`fit` only
    primes those counts from HISTORY. Movies the runtime has no row for score ``-inf`` and fold nothing.
    """

    def __init__(self, runtime: ModelRuntime, movie_ids: np.ndarray) -> None:
        self.runtime = runtime
        self.movie_ids = movie_ids
        index = runtime.index_of
        self._to_rt = np.array([index.get(int(m), -1) for m in movie_ids.tolist()], dtype=np.int64)
        self._has = self._to_rt >= 0
        self._trending = np.full(runtime.n_items, -np.inf)
        self._now = 0.0

    def fit(self, data: Interactions) -> Self:
        """Prime the item prior's counts from ``data.history`` (the model's weights stay as they are)."""
        self._trending = np.full(self.runtime.n_items, -np.inf)
        h = data.history
        if self.runtime.has_item_prior and len(h):
            rt_items = self._to_rt[h.item]
            ok = rt_items >= 0
            inc = trending_increment(h.ts[ok], self.runtime.item_prior["half_life_s"])
            np.logaddexp.at(self._trending, rt_items[ok], inc)
        self._now = float(h.ts.max()) if len(h) else 0.0
        return self

    def new_state(self) -> UserState:
        return cold_state(self.runtime.weights)

    def learn_one(self, state: UserState, item: int, rating: float, previous_rating: float | None = None) -> UserState:
        idx = int(self._to_rt[item])
        if idx < 0:
            return state
        folded = fold_in(self.runtime.weights, state, idx, rating, previous_rating)
        length = max(int(self.runtime.sequence_params["length"]), 1)
        return replace(folded, recent=push_recent(state.recent, idx, length))  # the co-rating term's state

    def observe(self, item: int, rating: float, previous_rating: float | None = None, ts: float | None = None) -> None:
        idx = int(self._to_rt[item])
        if ts is None:
            return
        self._now = max(self._now, float(ts))
        if idx >= 0 and self.runtime.has_item_prior:
            inc = float(trending_increment(ts, self.runtime.item_prior["half_life_s"]))
            self._trending[idx] = np.logaddexp(self._trending[idx], inc)

    def score_one(self, state: UserState) -> np.ndarray:
        mu, _ = encode(self.runtime.weights, state)
        rt_scores = self.runtime.scores(mu, self._trending, self._now) if self.runtime.has_item_prior else (
            self.runtime.scores(mu))  # fmt: skip
        seq = self.runtime.sequence_logits(state.recent)
        if seq is not None:
            rt_scores = rt_scores + seq
        out = np.full(len(self.movie_ids), -np.inf, dtype=np.float32)
        out[self._has] = rt_scores[self._to_rt[self._has]]
        return out

    def _get_params(self) -> dict[str, Any]:
        return {"runtime": self.runtime.version, "movies": len(self.movie_ids)}

    def save(self, folder: Path) -> None:
        raise ModelError("a RuntimeLearner is not saved: the model folder it wraps is the artifact")

    @classmethod
    def load(cls, folder: Path) -> Self:
        raise ModelError("a RuntimeLearner is built from a loaded ModelRuntime")


@dataclass(frozen=True)
class Verdict:
    """Champion vs challenger on the window (HR@20 and NDCG@20, all groups)."""

    champion: str
    challenger: str
    champion_hr: float
    challenger_hr: float
    champion_ndcg: float
    challenger_ndcg: float
    events: int  #: scored window events
    margin: float

    @property
    def promote(self) -> bool:
        """True when the challenger's HR@20 is above the champion's plus the margin (a tie keeps the champion)."""
        return self.events > 0 and self.challenger_hr > self.champion_hr + self.margin

    def as_dict(self) -> dict[str, Any]:
        return {"champion": self.champion, "challenger": self.challenger, "champion_hr_at_20": self.champion_hr,
                "challenger_hr_at_20": self.challenger_hr, "champion_ndcg_at_20": self.champion_ndcg,
                "challenger_ndcg_at_20": self.challenger_ndcg, "window_events": self.events,
                "margin": self.margin, "promoted": self.promote}  # fmt: skip


def judge(
    champion: ModelRuntime, train: Callable[[Interactions], ModelRuntime], data: Interactions, *, margin: float = 0.0
) -> tuple[Verdict, ModelRuntime]:
    """Train the challenger on ``data.history`` (``train``), walk the window with both; (verdict, challenger)."""
    if not len(data.stream):
        raise DataError("the window holds no events: nothing to judge the challenger on")
    challenger = train(data)
    results = {}
    for name, rt in (("champion", champion), ("challenger", challenger)):
        learner = RuntimeLearner(rt, data.movie_ids).fit(data)
        results[name] = prequential(learner, data, streaming=True, name=rt.version).groups["overall"]
    verdict = Verdict(
        champion.version, challenger.version, results["champion"]["hr"], results["challenger"]["hr"],
        results["champion"]["ndcg"], results["challenger"]["ndcg"], int(results["champion"]["events"]), margin,
    )  # fmt: skip
    return verdict, challenger
