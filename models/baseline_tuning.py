"""Tuning the yardsticks as the hybrid VAE is tuned: a small grid on the HISTORY-only validation walk.

"Give every baseline the same tricks and tuning budget as your model": the hybrid VAE's item prior
(``beta``, half-life) is chosen on :func:`models.tuning.validation_split` (HISTORY cut at its own 0.8
time quantile, the prequential STREAMING walk over the second part). :func:`tune_baseline` does the
same for EASE and ItemKNN, by coordinate search: first the model's own grid (``l2``; ``k`` x
``shrinkage``) without a prior, then the prior's ``beta`` x half-life at the best of those (the prior
changes scoring only, so one fit serves that whole second grid). STREAM is never read.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.base import Recommender
from models.data import Interactions
from models.decayed_counts import DecayedItemCounts
from models.evaluation.prequential import prequential
from models.tuning import validation_split

__all__ = ["BaselineTuning", "tune_baseline"]

#: The prior grid every yardstick gets (beta 0, no prior, is always a candidate).
PRIOR_BETAS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
PRIOR_HALF_LIVES_DAYS: tuple[float, ...] = (30.0, 365.0, 1825.0)


@dataclass
class BaselineTuning:
    """The chosen constructor arguments and every trial's validation metrics."""

    best: dict[str, Any]
    best_hr: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_hr": self.best_hr, "events": self.events, "trials": self.trials}


def _with_prior(model: Recommender, val: Interactions, beta: float, half_life_days: float) -> Recommender:
    """A shallow copy of fitted ``model`` with another prior, primed on the validation HISTORY."""
    out = copy.copy(model)
    out.prior_beta, out.prior_half_life_days = float(beta), float(half_life_days)  # type: ignore[attr-defined]
    out.counts_ = DecayedItemCounts(val.n_items, half_life_days).prime(val.history)  # type: ignore[attr-defined]
    return out


def tune_baseline(
    factory: Callable[..., Recommender],
    data: Interactions,
    grid: Mapping[str, Sequence[Any]],
    *,
    betas: Iterable[float] = PRIOR_BETAS,
    half_lives_days: Iterable[float] = PRIOR_HALF_LIVES_DAYS,
    quantile: float = 0.8,
    log: Callable[[str], None] | None = None,
) -> BaselineTuning:
    """Choose ``factory``'s ``grid`` arguments, then its item prior, by validation HR@20 (ties: the earlier trial).

    ``factory(**kwargs)`` builds an unfitted learner with ``prior_beta`` / ``prior_half_life_days``
    arguments and a ``counts_`` attribute (:class:`models.ease.EASE`, :class:`models.itemknn.ItemKNN`).
    """
    val = validation_split(data, quantile)
    trials: list[dict[str, Any]] = []
    best: tuple[float, dict[str, Any], Recommender | None] = (-1.0, {}, None)

    def record(params: dict[str, Any], model: Recommender) -> float:
        res = prequential(copy.deepcopy(model) if model is best[2] else model, val, streaming=True)
        hr = res.groups["overall"]["hr"]
        trials.append({"params": params, "groups": res.groups})
        if log is not None:
            log(f"validation {factory.__name__}({', '.join(f'{k}={v:g}' for k, v in params.items())})  HR@20 {hr:.4f}")
        return hr

    names = list(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        params = {**dict(zip(names, values, strict=True)), "prior_beta": 0.0}
        model = factory(**params).fit(val)
        hr = record(params, copy.deepcopy(model))
        if hr > best[0]:
            best = (hr, params, model)
    fitted = best[2]
    assert fitted is not None, "an empty grid"
    base = {k: v for k, v in best[1].items() if k != "prior_beta"}
    for hl in half_lives_days:
        for beta in betas:
            params = {**base, "prior_beta": float(beta), "prior_half_life_days": float(hl)}
            hr = record(params, _with_prior(fitted, val, beta, hl))
            if hr > best[0]:
                best = (hr, params, fitted)
    events = int(trials[0]["groups"]["overall"]["events"]) if trials else 0
    return BaselineTuning(best=best[1], best_hr=best[0], trials=trials, events=events)
