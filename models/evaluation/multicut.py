"""Every model at several time cuts, over several seeds: numbers that cannot be tuned to one split.

For each cut quantile (:func:`models.evaluation.cuts.cut_at`), :func:`evaluate_cuts` builds the line-up
for that cut (the yardsticks are tuned on that cut's HISTORY-only validation walk, see
:func:`standard_lineup`), fits each model once per seed (deterministic models: one seed), and walks
STREAM prequentially in the STATIC, STREAMING and (``retrain_every_days``) periodic-retrain
flavours. :func:`summarise` turns the runs into a mean and a spread per cut, model and flavour, plus
the ratios the goals are stated in.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.base import Recommender
from models.data import Interactions
from models.evaluation.cuts import cut_at
from models.evaluation.prequential import prequential

__all__ = ["Lineup", "ModelSpec", "aggregate", "evaluate_cuts", "standard_lineup", "summarise"]

DAY_S = 86400.0

#: The metrics a run reports (``groups`` flattened): name -> (group, key) or a top-level key.
METRICS: dict[str, tuple[str, str] | str] = {
    "hr": ("overall", "hr"), "ndcg": ("overall", "ndcg"), "mrr": ("overall", "mrr"),
    "warm_hr": ("warm", "hr"), "cold_hr": ("cold", "hr"), "coverage": "coverage", "novelty": "novelty",
    "diversity": "diversity",
}  # fmt: skip


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model of the line-up: ``make(seed)`` gives an unfitted learner."""

    make: Callable[[int], Recommender]
    seeds: Sequence[int] = (0,)
    tuned: dict[str, Any] | None = None  #: the validation choice, for the report


#: The models at one cut, by display name.
Lineup = dict[str, ModelSpec]


def aggregate(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max of ``values``.

    >>> aggregate([0.1, 0.2, 0.3])["std"]
    0.1
    """
    a = np.asarray(values, dtype=np.float64)
    std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {"mean": float(a.mean()), "std": round(std, 12), "min": float(a.min()), "max": float(a.max()),
            "n": len(a)}  # fmt: skip


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name, where in METRICS.items():
        out[name] = float(result["groups"][where[0]][where[1]] if isinstance(where, tuple) else result[where])
    return out


def evaluate_cuts(
    data: Interactions,
    cuts: Sequence[float],
    lineup: Callable[[Interactions], Lineup],
    *,
    retrain_every_days: float | None = None,
    static: bool = True,
    load_cut: Callable[[float], Interactions] | None = None,
    on_cut: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Runs per cut, model, flavour and seed, and their :func:`summarise` (``on_cut`` after each cut).

    ``load_cut(q)`` gives the data at cut ``q`` (default: :func:`cut_at` of ``data``; a loader that
    also rebuilds side features at the cut, as ``reelstream evaluate --data`` does, may be given).
    """
    report: dict[str, Any] = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "retrain_every_days": retrain_every_days, "cuts": []}  # fmt: skip
    for q in cuts:
        d = load_cut(q) if load_cut is not None else cut_at(data, q)
        started = time.perf_counter()
        models = lineup(d)
        runs: list[dict[str, Any]] = []
        for name, spec in models.items():
            for seed in spec.seeds:
                fit_started = time.perf_counter()
                fitted = spec.make(seed).fit(d)
                fit_s = time.perf_counter() - fit_started
                flavours: list[tuple[str, dict[str, Any]]] = [("streaming", {})]
                if static:
                    flavours.insert(0, ("static", {"streaming": False}))
                if retrain_every_days:
                    refit = _refitter(spec.make, seed)
                    flavours.append(("retrain", {"refit": refit, "retrain_every_s": retrain_every_days * DAY_S}))
                for flavour, kwargs in flavours:
                    model = fitted if flavour == "static" else copy.deepcopy(fitted)
                    res = prequential(model, d, name=name, **kwargs).as_dict()
                    runs.append({"model": name, "flavour": flavour, "seed": seed, "fit_seconds": fit_s, **res})
                    if log is not None:
                        log(f"cut {q:g} {name:<16} seed {seed} {flavour:<9} HR@20 {res['groups']['overall']['hr']:.4f}"
                            f" warm {res['groups']['warm']['hr']:.4f} ({res['seconds']:.0f} s walk,"
                            f" {res['retrains']} refits)")  # fmt: skip
        split = d.metadata.get("split", {})
        entry = {
            "quantile": q, "cut_ts": split.get("cut_ts"), "history_ratings": len(d.history),
            "stream_ratings": len(d.stream), "catalogue": int(d.known_items().sum()),
            "stream_days": float((d.stream.ts.max() - d.stream.ts.min()) / DAY_S) if len(d.stream) else 0.0,
            "tuned": {name: spec.tuned for name, spec in models.items() if spec.tuned is not None},
            "runs": runs, "seconds": time.perf_counter() - started,
        }  # fmt: skip
        entry["summary"] = summarise(runs)
        report["cuts"].append(entry)
        if on_cut is not None:
            on_cut(report)
    return report


def _refitter(make: Callable[[int], Recommender], seed: int) -> Callable[[Interactions], Recommender]:
    def refit(so_far: Interactions) -> Recommender:
        return make(seed).fit(so_far)

    return refit


def summarise(runs: Sequence[dict[str, Any]], hybrid: str = "hybrid VAE") -> dict[str, Any]:
    """Mean and spread over seeds per (model, flavour), and the goal ratios on the STREAMING means.

    ``best EASE`` is the EASE row with the highest STREAMING HR@20 mean; the ratios are
    ``hybrid / best EASE`` (overall and warm HR@20) and ``hybrid / ItemKNN`` (the best ItemKNN row),
    and ``retrain / frozen`` (the same model's retrain over its streaming HR@20) per model.
    """
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for key in dict.fromkeys((r["model"], r["flavour"]) for r in runs):
        mine = [_metrics(r) for r in runs if (r["model"], r["flavour"]) == key]
        table.setdefault(key[0], {})[key[1]] = {m: aggregate([x[m] for x in mine]) for m in METRICS}

    def mean(model: str, metric: str = "hr", flavour: str = "streaming") -> float | None:
        cell = table.get(model, {}).get(flavour)
        return cell[metric]["mean"] if cell else None

    def best(prefix: str) -> str | None:
        names = [m for m in table if m.startswith(prefix) and mean(m) is not None]
        return max(names, key=lambda m: mean(m) or 0.0) if names else None

    ratios: dict[str, Any] = {}
    ease, knn, h = best("EASE"), best("ItemKNN"), mean(hybrid)
    if h is not None and ease is not None:
        ratios["best_ease"] = ease
        ratios["hybrid_over_best_ease"] = h / (mean(ease) or float("nan"))
        ratios["warm_hybrid_over_best_ease"] = (mean(hybrid, "warm_hr") or 0.0) / (
            mean(ease, "warm_hr") or float("nan")
        )
    if h is not None and knn is not None:
        ratios["best_itemknn"] = knn
        ratios["hybrid_over_itemknn"] = h / (mean(knn) or float("nan"))
    ratios["retrain_over_frozen"] = {
        m: (mean(m, "hr", "retrain") or 0.0) / (mean(m) or float("nan"))
        for m in table
        if mean(m, "hr", "retrain") is not None and mean(m)
    }
    return {"models": table, "ratios": ratios}


def standard_lineup(
    hybrid: Callable[..., Recommender],
    seeds: Sequence[int],
    *,
    tune: bool = True,
    configure: Callable[[Interactions], dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> Callable[[Interactions], Lineup]:
    """Popularity, EASE(l2=200), EASE and ItemKNN tuned on the cut's validation walk, and ``hybrid(seed, **chosen)``.

    The yardsticks are deterministic (one run each); the hybrid runs once per seed. ``configure(d)`` is the
    hybrid's own choice on the cut's validation walk (what ``reelstream train`` does: ``self_configure``),
    made once per cut (seed 0's) and used by every seed and every periodic refit. ``tune=False`` keeps every
    row at its defaults (EASE l2 200 with no prior, ItemKNN k 100, the hybrid unconfigured), for quick runs.
    """
    from models.baseline_tuning import tune_baseline
    from models.ease import EASE
    from models.itemknn import ItemKNN
    from models.popularity import Popularity

    def build(d: Interactions) -> Lineup:
        ease_best: dict[str, Any] = {"l2": 200.0}
        knn_best: dict[str, Any] = {"k": 100}
        if tune:
            ease_best = tune_baseline(EASE, d, {"l2": (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)}, log=log).best
            knn_best = tune_baseline(
                ItemKNN, d, {"k": (5, 10, 20, 50, 100, 200), "shrinkage": (0.0, 20.0, 100.0)}, log=log
            ).best
        chosen: dict[str, Any] = configure(d) if tune and configure is not None else {}
        return {
            "popularity": ModelSpec(lambda _s: Popularity()),
            "EASE(l2=200)": ModelSpec(lambda _s: EASE(l2=200.0)),
            "EASE tuned": ModelSpec(lambda _s: EASE(**ease_best), tuned=ease_best),
            "ItemKNN tuned": ModelSpec(lambda _s: ItemKNN(**knn_best), tuned=knn_best),
            "hybrid VAE": ModelSpec(lambda s: hybrid(s, **chosen), seeds=tuple(seeds), tuned=chosen or None),
        }

    return build
