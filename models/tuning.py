"""Choosing hyper-parameters without the test stream: the HISTORY-only validation walk.

:func:`validation_split` cuts HISTORY at its own time quantile (0.8 by default) into an inner HISTORY and an
inner STREAM. :func:`self_configure` fits the hybrid VAE once on the inner HISTORY and searches the
scoring-only parameters (the item prior's beta and half-life, the co-rating component's gamma, decay,
length and window) on the prequential STREAMING walk over the inner STREAM (``docs/evaluation.md``),
scored in batches (:class:`~models.evaluation.batched.ScoringWalk`). STREAM is never read.

The search is coordinate ascent over ladders of values (:data:`LADDERS`): each parameter moves along its
ladder while the validation HR@20 improves, and a ladder is **widened** when the best value is at its open
end (beta, gamma, half-life and window grow; the half-life also shrinks), so nothing is chosen at the edge
of a grid that could go further. Passes repeat until no parameter moves. At the end every parameter's two
neighbours are scored at the chosen point, and the choice records, per parameter, whether it is interior
or at a hard bound (beta 0 and gamma 0 turn a component off; decay lies in (0, 1); length is capped).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from models.data import Interactions
from models.evaluation.batched import ScoringWalk, WalkSetting

if TYPE_CHECKING:
    from models.training import EpochReport

#: The validation table's label of the recency-tuned popularity baseline.
POPULARITY = "popularity (decayed counts, tuned half-life)"

__all__ = ["LADDERS", "POPULARITY", "Ladder", "SelfConfiguration", "self_configure", "validation_split", "with_choice"]


def validation_split(data: Interactions, quantile: float = 0.8) -> Interactions:
    """``data.history`` split at its own ``quantile`` of timestamps (``ts < cut``: inner HISTORY).

    The catalogue, side features and index spaces stay those of ``data``; ``data.stream`` is dropped.
    """
    h = data.history
    cut = float(np.quantile(h.ts, quantile)) if len(h) else 0.0
    before = h.ts < cut
    return Interactions(
        history=h.select(before), stream=h.select(~before), n_users=data.n_users, n_items=data.n_items,
        item_side=data.item_side, side_names=data.side_names, movie_ids=data.movie_ids, genres=data.genres,
        version=data.version, metadata={"validation_of": data.metadata.get("split"), "split_ts": cut,
                                        "split_quantile": quantile}, side_year_range=data.side_year_range,
    )  # fmt: skip


@dataclass(frozen=True)
class Ladder:
    """The values one parameter may take, in order; ``grow``/``shrink`` widen an open end by that factor."""

    values: tuple[float, ...]
    grow: float | None = None
    shrink: float | None = None
    integer: bool = False
    floor: float | None = None  #: smallest value ``shrink`` may reach
    cap: float | None = None  #: largest value ``grow`` may reach

    def widened(self, values: list[float], at_top: bool) -> float | None:
        """The next value beyond the current end, or None when that end is a hard bound."""
        factor = self.grow if at_top else self.shrink
        if factor is None:
            return None
        nxt = values[-1] * factor if at_top else values[0] / factor
        if self.integer:
            nxt = float(max(round(nxt), values[-1] + 1) if at_top else min(round(nxt), values[0] - 1))
        if (self.cap is not None and nxt > self.cap) or (self.floor is not None and nxt < self.floor):
            return None
        return nxt


#: The search space: start values are the model's defaults (:class:`~models.hybrid_vae.HybridVAE`).
LADDERS: dict[str, Ladder] = {
    "prior_beta": Ladder((0.0, 0.25, 0.5, 1.0, 1.5, 2.0), grow=1.5),
    "prior_half_life_days": Ladder((7.0, 30.0, 90.0, 365.0, 1825.0), grow=4.0, shrink=4.0, floor=0.25),
    "seq_gamma": Ladder((0.0, 0.25, 0.5, 1.0, 1.5, 2.0), grow=1.5),
    "seq_decay": Ladder((0.3, 0.5, 0.7, 0.85, 0.95)),
    "seq_length": Ladder((1.0, 3.0, 5.0, 10.0, 20.0, 40.0), grow=2.0, integer=True, cap=80.0),
    "seq_window": Ladder((1.0, 2.0, 3.0, 5.0, 8.0), grow=1.6, integer=True, cap=64.0),
}


@dataclass
class SelfConfiguration:
    """What :func:`self_configure` chose, and every setting it scored (the validation table)."""

    chosen: dict[str, float]
    hr: float
    groups: dict[str, dict[str, float]]
    interior: dict[str, str]  #: parameter -> "interior", or the hard bound it sits at
    trials: list[dict[str, Any]] = field(default_factory=list)
    baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    popularity_half_life_days: float = 0.0  #: the half-life the popularity baseline was tuned to

    def lift_over_popularity(self) -> float:
        """Validation HR@20 of the choice over the recency-tuned popularity baseline's (inf when that is 0)."""
        base = self.baselines[POPULARITY]["overall"]["hr"] if POPULARITY in self.baselines else 0.0
        return self.hr / base if base > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _setting(values: dict[str, float]) -> WalkSetting:
    return WalkSetting(
        prior_beta=float(values["prior_beta"]), prior_half_life_days=float(values["prior_half_life_days"]),
        seq_gamma=float(values["seq_gamma"]), seq_decay=float(values["seq_decay"]),
        seq_length=int(values["seq_length"]), seq_window=int(values["seq_window"]),
    )  # fmt: skip


class _CoordinateSearch:
    """Coordinate ascent over the walk's ladders: each parameter in turn moves to a better neighbour until none
    improves HR@20 (ties keep the current value, so the search ends); scored settings are cached."""

    def __init__(self, walk: ScoringWalk, ladders: dict[str, Ladder], start: dict[str, float], *, top_k: int,
                 spent: Callable[[], bool], log: Callable[[str], None] | None) -> None:  # fmt: skip
        self.walk, self.ladders, self.top_k, self.spent, self.log = walk, ladders, top_k, spent, log
        self.current = dict(start)
        self.values = {name: sorted({*lad.values, start[name]}) for name, lad in ladders.items()}
        self.scored: dict[WalkSetting, dict[str, dict[str, float]]] = {}
        self.trials: list[dict[str, Any]] = []

    def hr(self, point: dict[str, float]) -> float:
        """Validation HR@20 at ``point``; -1 for an unscored one once the budget is spent (it never wins)."""
        setting = _setting(point)
        if setting not in self.scored and self.spent() and self.scored:
            return -1.0
        if setting not in self.scored:
            self.scored[setting] = g = self.walk.score(setting, top_k=self.top_k)
            self.trials.append({**asdict(setting), "groups": g})
            if self.log is not None:
                self.log("validation: " + " ".join(f"{k} {v:g}" for k, v in asdict(setting).items())
                         + f"  HR@20 {g['overall']['hr']:.4f}")  # fmt: skip
        return self.scored[setting]["overall"]["hr"]

    def neighbours(self, name: str, value: float) -> tuple[float | None, float | None]:
        """The ladder values either side of ``value``, widening the ladder at an open end."""
        ladder, vals = self.ladders[name], self.values[name]
        i = vals.index(value)
        lower = vals[i - 1] if i > 0 else ladder.widened(vals, at_top=False)
        upper = vals[i + 1] if i + 1 < len(vals) else ladder.widened(vals, at_top=True)
        for v in (lower, upper):
            if v is not None and v not in vals:
                vals.append(v)
                vals.sort()
        return lower, upper

    def climb(self, max_passes: int) -> None:
        """Up to ``max_passes`` rounds over every parameter; stops early on a round that moved none."""
        for _ in range(max_passes):
            moved = False
            for name in self.ladders:
                moved |= self._climb_one(name)
            if not moved:
                return

    def _climb_one(self, name: str) -> bool:
        best, moved = self.hr(self.current), False
        while True:
            lower, upper = self.neighbours(name, self.current[name])
            options = [(self.hr({**self.current, name: v}), v) for v in (lower, upper) if v is not None]
            top = max(options, default=(best, self.current[name]))
            if top[0] <= best:
                return moved
            best, self.current[name], moved = top[0], top[1], True

    def interior(self) -> dict[str, str]:
        """Score the choice's neighbours too and say, per parameter, whether the choice is interior."""
        out: dict[str, str] = {}
        for name in self.ladders:
            lower, upper = self.neighbours(name, self.current[name])
            for v in (lower, upper):
                if v is not None:
                    self.hr({**self.current, name: v})
            if not all(_setting({**self.current, name: v}) in self.scored for v in (lower, upper) if v is not None):
                out[name] = "not checked (search budget spent)"
            elif lower is not None and upper is not None:
                out[name] = "interior"
            else:
                out[name] = f"bound {self.current[name]:g}"
        return out


def self_configure(
    params: dict[str, Any],
    data: Interactions,
    *,
    quantile: float = 0.8,
    ladders: dict[str, Ladder] | None = None,
    max_passes: int = 4,
    baselines: bool = True,
    log: Callable[[str], None] | None = None,
    max_seconds: float | None = None,
    max_events: int = 50_000,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> SelfConfiguration:
    """Fit ``HybridVAE(**params)`` on the inner HISTORY of ``data`` and choose its scoring-only parameters.

    Parameters in ``params`` that :data:`LADDERS` names are the search's starting point. The objective is
    the validation walk's overall HR@20; a move must improve it (ties keep the current value), so the
    search ends. ``baselines`` also walks popularity and EASE(200) over the same inner STREAM, for the table
    (one event at a time: small data only); the recency-tuned popularity of the batched walk is always there.

    ``max_events`` bounds the walk's scored events (:class:`ScoringWalk`). ``max_seconds`` bounds the search
    (not the fit: ``params["max_seconds"]`` does): once spent, no new setting is scored, the best so far is
    the choice and the unchecked parameters say so in ``interior``. The fitted inner model is kept as
    ``.inner_model`` (not serialised), for a warm-started final fit.
    """
    from models.hybrid_vae import HybridVAE

    ladders = LADDERS if ladders is None else ladders
    started = time.perf_counter()
    val = validation_split(data, quantile)
    model = HybridVAE(**params).fit(val, on_epoch=on_epoch, on_step=on_step)
    fitted = time.perf_counter()

    def spent() -> bool:
        return max_seconds is not None and time.perf_counter() - fitted >= max_seconds

    walk = ScoringWalk(
        model.runtime_, val, max_length=int(max(ladders["seq_length"].cap or 80, 1)), max_events=max_events
    )
    defaults = HybridVAE(**params)
    start = {name: float(getattr(defaults, name)) for name in ladders}
    top_k = int(params.get("seq_top_k", defaults.seq_top_k))
    search = _CoordinateSearch(walk, ladders, start, top_k=top_k, spent=spent, log=log)
    search.climb(max_passes)
    interior = search.interior()
    current = search.current
    popularity, popularity_half_life = _tune_popularity(
        walk, ladders["prior_half_life_days"], search.values["prior_half_life_days"], log
    )
    chosen_groups = search.scored[_setting(current)]
    chosen = {k: (int(v) if ladders[k].integer else v) for k, v in current.items()}
    out = SelfConfiguration(chosen, chosen_groups["overall"]["hr"], chosen_groups, interior, search.trials,
                            events=walk.events)  # fmt: skip
    out.seconds = {"fit": fitted - started, "search": time.perf_counter() - fitted}
    out.baselines[POPULARITY] = popularity
    out.popularity_half_life_days = popularity_half_life
    out.inner_model = model  # type: ignore[attr-defined]  # a plain attribute: asdict leaves it out
    out.inner_history_ratings = len(val.history)  # type: ignore[attr-defined]  # for the final fit's budget
    if baselines:
        import copy

        from models.ease import EASE
        from models.evaluation.prequential import prequential
        from models.popularity import Popularity

        for label, learner in (("popularity", Popularity()), ("EASE(l2=200)", EASE(l2=200.0, tie_break=0.0))):
            out.baselines[label] = prequential(copy.deepcopy(learner.fit(val)), val, streaming=True).groups
            if log is not None:
                log(f"validation: {label:<22} HR@20 {out.baselines[label]['overall']['hr']:.4f}")
    return out


def _tune_popularity(walk: ScoringWalk, ladder: Ladder, start: list[float],
                     log: Callable[[str], None] | None) -> tuple[dict[str, dict[str, float]], float]:  # fmt: skip
    """Recency-decayed popularity on the same walk, its half-life searched on the same ladder (widened the
    same way): the popularity baseline gets the hybrid's recency trick and tuning budget."""
    values = sorted(start)
    scored: dict[float, dict[str, dict[str, float]]] = {}

    def hr(half_life: float) -> float:
        if half_life not in scored:
            setting = WalkSetting(1.0, half_life, 0.0, 0.5, 1, 1, vae=False)
            scored[half_life] = walk.score(setting)
        return scored[half_life]["overall"]["hr"]

    best = max(values, key=hr)
    while True:  # widen while the best sits at an open end
        i = values.index(best)
        at_top, at_bottom = i == len(values) - 1, i == 0
        nxt = (
            ladder.widened(values, at_top=True)
            if at_top
            else ladder.widened(values, at_top=False)
            if at_bottom
            else None
        )
        if nxt is None:
            break
        values = sorted({*values, nxt})
        if hr(nxt) <= hr(best):
            break
        best = nxt
    groups = scored[best]
    if log is not None:
        log(f"validation: {POPULARITY} (half-life {best:g} d)  HR@20 {groups['overall']['hr']:.4f}")
    return groups, best


def with_choice(params: dict[str, Any], config: SelfConfiguration) -> dict[str, Any]:
    """``params`` with the chosen values (what the final fit on all of HISTORY uses)."""
    return {**params, **config.chosen}
