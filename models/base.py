"""The learner interface every recommender in ``models/`` implements.

A learner is fitted once on HISTORY (:meth:`Recommender.fit`), then lives on
the stream: each user carries a *state* that :meth:`Recommender.learn_one`
updates from one rating event, and :meth:`Recommender.score_one` turns a state
into scores over the whole catalogue. Global, non-personal updates (popularity
counts) go through :meth:`Recommender.observe`. The evaluation
(:mod:`models.evaluation`) drives learners only through these methods, so the
STATIC flavour is "never call ``learn_one``/``observe`` after the split" and the
STREAMING flavour is "call them for every event".

Constructors store their arguments unchanged, so :meth:`Recommender.clone` and
``repr`` are derived from the ``__init__`` signature (river's ``base.Base``).
"""

from __future__ import annotations

import abc
import inspect
from pathlib import Path
from typing import Any, Self

import numpy as np

from models.artifacts import read_json, write_json
from models.data import Events, Interactions
from reelstream.errors import ModelError

__all__ = ["Recommender"]

#: A user's state: whatever the learner needs (opaque to callers).
State = Any


class Recommender(abc.ABC):
    """Fit on HISTORY, then update per event and score the catalogue per user."""

    # --- identity (river-style, from the constructor) --------------------------------
    def _get_params(self) -> dict[str, Any]:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def clone(self) -> Self:
        """A fresh, unfitted learner with the same parameters."""
        return type(self)(**self._get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._get_params().items())
        return f"{type(self).__name__}({args})"

    # --- learning ---------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, data: Interactions) -> Self:
        """Learn from ``data.history`` (never from ``data.stream``)."""

    @abc.abstractmethod
    def new_state(self) -> State:
        """The state of a user with no events."""

    @abc.abstractmethod
    def learn_one(self, state: State, item: int, rating: float, previous_rating: float | None = None) -> State:
        """The user's state after rating ``item``; ``previous_rating`` is their earlier rating of it."""

    def observe(  # noqa: B027
        self, item: int, rating: float, previous_rating: float | None = None, ts: float | None = None
    ) -> None:
        """Update global (non-personal) statistics from one event at ``ts`` (seconds); most learners have none."""

    @abc.abstractmethod
    def score_one(self, state: State) -> np.ndarray:
        """float32 [n_items] scores for the user; higher is better."""

    def states_from(self, events: Events) -> dict[int, State]:
        """Each user's state after replaying ``events`` (time order) through :meth:`learn_one`."""
        states: dict[int, State] = {}
        last: dict[tuple[int, int], float] = {}
        for u, i, r in zip(events.user.tolist(), events.item.tolist(), events.rating.tolist(), strict=True):
            state = states.get(u)
            if state is None:
                state = self.new_state()
            states[u] = self.learn_one(state, i, r, last.get((u, i)))
            last[(u, i)] = r
        return states

    # --- persistence ------------------------------------------------------------------
    @abc.abstractmethod
    def save(self, folder: Path) -> None:
        """Write the fitted learner into ``folder`` (no pickles)."""

    @classmethod
    @abc.abstractmethod
    def load(cls, folder: Path) -> Self:
        """Read a learner that :meth:`save` wrote; ModelError when missing or corrupt."""

    def _write_params(self, folder: Path, learner: str) -> None:
        """Create ``folder`` and record the constructor arguments under the learner's name."""
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "params.json", {"learner": learner, **self._get_params()})

    @classmethod
    def _from_params(cls, folder: Path, learner: str) -> Self:
        """A fresh learner built from ``params.json``; ModelError when the folder holds another learner."""
        params = read_json(folder / "params.json")
        if params.pop("learner", None) != learner:
            raise ModelError(f"{folder}: params.json holds another learner, not {learner}")
        return cls(**params)
