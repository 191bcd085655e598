"""Choosing hyper-parameters without the test stream: the HISTORY-only validation walk.

:func:`validation_split` cuts HISTORY at its own time quantile (0.8 by default) into an inner
HISTORY and an inner STREAM; :func:`tune_item_prior` fits the hybrid VAE on the inner HISTORY and
runs the prequential STREAMING walk (``docs/evaluation.md``) over the inner STREAM for each
``(prior_beta, prior_half_life_days)`` in a grid. The prior only changes scoring, so one fit
serves the whole grid. STREAM is never read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.data import Interactions
from models.evaluation.prequential import prequential

__all__ = ["PriorTrial", "TuningResult", "tune_item_prior", "validation_split"]


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
class PriorTrial:
    beta: float
    half_life_days: float
    groups: dict[str, dict[str, float]]

    @property
    def hr(self) -> float:
        return self.groups["overall"]["hr"]


@dataclass
class TuningResult:
    trials: list[PriorTrial]
    best: PriorTrial
    baselines: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "best": {"prior_beta": self.best.beta, "prior_half_life_days": self.best.half_life_days,
                     "hr": self.best.hr},
            "trials": [{"prior_beta": t.beta, "prior_half_life_days": t.half_life_days, "groups": t.groups}
                       for t in self.trials],
            "baselines": self.baselines,
        }  # fmt: skip


def tune_item_prior(
    params: dict[str, Any],
    data: Interactions,
    *,
    betas: Iterable[float] = (0.0, 0.5, 1.0, 1.25, 1.5),
    half_lives_days: Iterable[float] = (7.0, 90.0, 365.0, 1825.0),
    quantile: float = 0.8,
    baselines: bool = True,
    log: Callable[[str], None] | None = None,
) -> TuningResult:
    """Fit ``HybridVAE(**params)`` on the inner HISTORY of ``data`` and score each prior on the inner STREAM.

    The best trial has the highest overall HR@20 (ties: the smaller beta, then the shorter half-life).
    ``baselines`` also walks popularity and EASE(200) STREAMING over the same inner STREAM.
    """
    from models.hybrid_vae import HybridVAE

    val = validation_split(data, quantile)
    model = HybridVAE(**params).fit(val)
    trials = []
    for hl in half_lives_days:
        for beta in betas:
            if beta == 0.0 and trials and trials[0].beta == 0.0:
                continue  # beta 0 does not depend on the half-life
            model.set_item_prior(beta, hl, val.history)
            res = prequential(model, val, streaming=True)
            trials.append(PriorTrial(float(beta), float(hl), res.groups))
            if log is not None:
                log(f"validation: beta {beta:<5g} half-life {hl:>5g} d  HR@20 {res.groups['overall']['hr']:.4f}"
                    f"  cold {res.groups['cold']['hr']:.4f}  warm {res.groups['warm']['hr']:.4f}")  # fmt: skip
    best = max(trials, key=lambda t: (round(t.hr, 10), -t.beta, -t.half_life_days))
    out = TuningResult(trials, best, events=int(best.groups["overall"]["events"]))
    if baselines:
        import copy

        from models.ease import EASE
        from models.popularity import Popularity

        for name, learner in (("popularity", Popularity()), ("EASE(l2=200)", EASE(l2=200.0, tie_break=0.0))):
            fitted = learner.fit(val)
            out.baselines[name] = prequential(copy.deepcopy(fitted), val, streaming=True).groups
            if log is not None:
                log(f"validation: {name:<22} HR@20 {out.baselines[name]['overall']['hr']:.4f}")
    return out
