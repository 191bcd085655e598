"""``reelstream evaluate``: popularity, EASE and the current hybrid VAE on the prequential protocol.

The protocol is written down in ``docs/evaluation.md``. Results go to
``var/reports/evaluation.json`` (and a time-stamped copy) and print as a table.

With ``--cuts 0.7,0.8,0.9`` it instead re-splits the data at each time quantile, tunes the yardsticks
on each cut's HISTORY-only validation walk, fits every model there (the hybrid VAE once per seed, with
its default arguments) and reports the mean and spread per cut (``var/reports/evaluation-cuts.json``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reelstream.console import console
from reelstream.settings import get_settings
from reelstream.shell.commands.options import DataOption, ModelDirOption

__all__ = ["evaluate"]


def evaluate(
    model_dir: ModelDirOption = None,
    data: DataOption = None,
    output: Annotated[
        Path | None, typer.Option(help="JSON file to write (default var/reports/evaluation.json).")
    ] = None,
    ease_l2: Annotated[float, typer.Option(help="EASE ridge penalty.")] = 200.0,
    cuts: Annotated[
        str | None,
        typer.Option(help="Comma-separated time quantiles, e.g. 0.7,0.8,0.9: refit and score every model at each."),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="With --cuts: hybrid VAE seeds per cut (0, 1, ...).")] = 3,
    retrain_every_days: Annotated[
        float,
        typer.Option(min=0.0, help="With --cuts: the retrain flavour refits every N days of event time (0: off)."),
    ] = 365.0,
    tune: Annotated[
        bool,
        typer.Option(
            help="With --cuts: tune EASE, ItemKNN and the hybrid (self-configuration) on each cut's validation walk."
        ),
    ] = True,
) -> None:
    """Score STATIC and STREAMING flavours of every model and write the JSON report."""
    if cuts is not None:
        _run_cuts(data, output, parse_cuts(cuts), seeds, retrain_every_days, tune)
        return
    from models.artifacts import write_json
    from models.ease import EASE
    from models.evaluation.report import evaluate_models
    from models.loading import load_evaluated
    from models.popularity import Popularity

    settings = get_settings()
    interactions, folder, vae = load_evaluated(settings.store_dir, settings.models_dir, model_dir=model_dir, data=data)
    with console.status("fitting baselines…"):
        popularity = Popularity().fit(interactions)
        ease = EASE(l2=ease_l2, tie_break=0.0).fit(interactions)
        ease_ties = EASE(l2=ease_l2)
        ease_ties.__dict__.update({k: v for k, v in ease.__dict__.items() if k != "tie_break"})
    models = {
        "popularity": popularity,
        f"EASE(l2={ease_l2:g})": ease,
        f"EASE(l2={ease_l2:g}) + popularity ties": ease_ties,
        f"hybrid VAE {vae.runtime_.version}": vae,
    }
    report = evaluate_models(models, interactions, log=console.print)
    report["model_dir"] = str(folder)
    out = output or settings.reports_dir / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    stamped = out.with_name(f"{out.stem}-{time.strftime('%Y%m%dT%H%M%S')}{out.suffix}")
    write_json(stamped, report)
    console.print(prequential_table(report))
    console.print(next_period_table(report))
    console.print(f"written to {out}")


def parse_cuts(text: str) -> list[float]:
    """``"0.7,0.8"`` -> ``[0.7, 0.8]``; ConfigError unless each is a number strictly between 0 and 1."""
    from reelstream.errors import ConfigError

    out = []
    for part in text.split(","):
        try:
            q = float(part)
        except ValueError:
            raise ConfigError(f"--cuts: {part.strip()!r} is not a number (expected e.g. 0.7,0.8,0.9)") from None
        if not 0.0 < q < 1.0:
            raise ConfigError(f"--cuts: {q:g} is not a quantile strictly between 0 and 1")
        out.append(q)
    if len(set(out)) != len(out):
        raise ConfigError(f"--cuts: {text!r} names a cut twice")
    return out


def _run_cuts(
    data: Path | None, output: Path | None, cuts: list[float], seeds: int, retrain_every_days: float, tune: bool
) -> None:
    """The multi-cut, multi-seed evaluation; the JSON is rewritten after every cut (a long run keeps its cuts)."""
    from models.artifacts import write_json
    from models.data import from_movielens
    from models.evaluation.cuts import cut_at
    from models.evaluation.multicut import evaluate_cuts, standard_lineup
    from models.hybrid_vae import HybridVAE
    from models.loading import load_interactions

    settings = get_settings()
    base = load_interactions(settings.store_dir, data=data)
    # from a MovieLens folder, each cut also gets its own side features (tags counted before that cut)
    load_cut = (lambda q: cut_at(from_movielens(data, split_quantile=q), q)) if data is not None else None
    out = output or settings.reports_dir / "evaluation-cuts.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def save(report: dict[str, Any]) -> None:
        report.update(source=str(data) if data is not None else f"store v{base.version}", seeds=seeds,
                      wall_seconds=time.perf_counter() - started)  # fmt: skip
        write_json(out, report)
        out.with_suffix(".md").write_text(cuts_markdown(report))
        console.print(cuts_table(report["cuts"][-1]))

    from models.tuning import self_configure

    def configure(d: Any) -> dict[str, Any]:
        """The hybrid's self-configuration on this cut's HISTORY (as `reelstream train` does it)."""
        return self_configure({}, d, baselines=False).chosen

    lineup = standard_lineup(lambda seed, **chosen: HybridVAE(seed=seed, **chosen), range(seeds), tune=tune,
                             configure=configure, log=console.print)  # fmt: skip
    report = evaluate_cuts(base, cuts, lineup, retrain_every_days=retrain_every_days or None, load_cut=load_cut,
                           on_cut=save, log=console.print)  # fmt: skip
    stamped = out.with_name(f"{out.stem}-{time.strftime('%Y%m%dT%H%M%S')}{out.suffix}")
    write_json(stamped, report)
    console.print(f"written to {out} ({report['wall_seconds']:.0f} s)")


def _spread(cell: dict[str, float], digits: int = 4) -> str:
    if cell["n"] == 1:
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def _cell(cell: dict[str, float], digits: int = 4) -> str:
    if cell["n"] == 1:
        return f"{cell['mean']:.{digits}f}"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f} ({cell['min']:.{digits}f}-{cell['max']:.{digits}f})"


def _ratios_line(ratios: dict[str, Any]) -> str:
    parts = []
    if "hybrid_over_best_ease" in ratios:
        parts.append(f"hybrid / best EASE ({ratios['best_ease']}) {ratios['hybrid_over_best_ease']:.3f}, "
                     f"warm {ratios['warm_hybrid_over_best_ease']:.3f}")  # fmt: skip
    if "hybrid_over_itemknn" in ratios:
        parts.append(f"hybrid / ItemKNN {ratios['hybrid_over_itemknn']:.3f}")
    parts += [f"{m} retrain / frozen {v:.3f}" for m, v in ratios.get("retrain_over_frozen", {}).items()]
    return "; ".join(parts)


def _row_order(cut: dict[str, Any]) -> list[tuple[str, str]]:
    """(model, flavour) in the order the runs ran (the JSON's summary keys come back sorted)."""
    return list(dict.fromkeys((r["model"], r["flavour"]) for r in cut["runs"]))


def cuts_markdown(report: dict[str, Any]) -> str:
    """The finished cuts as markdown tables (mean ± std (min-max) over the runs), for docs/evaluation.md."""
    lines = []
    for cut in report["cuts"]:
        lines += [f"Cut {cut['quantile']:g} ({cut['history_ratings']:,} HISTORY / {cut['stream_ratings']:,} STREAM "
                  f"ratings, {cut['seconds'] / 60:.0f} min). Tuned: "
                  + "; ".join(f"{m} {t}" for m, t in cut["tuned"].items()), "",
                  "| model | flavour | runs | HR@20 | warm HR@20 | cold HR@20 | NDCG@20 | coverage | novelty |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for model, flavour in _row_order(cut):
            m = cut["summary"]["models"][model][flavour]
            lines.append(f"| {model} | {flavour} | {m['hr']['n']} | {_cell(m['hr'])} | {_cell(m['warm_hr'])} | "
                         f"{_cell(m['cold_hr'])} | {_cell(m['ndcg'])} | {_cell(m['coverage'], 3)} | "
                         f"{_cell(m['novelty'], 2)} |")  # fmt: skip
        lines += ["", "Ratios (STREAMING HR@20 means): " + _ratios_line(cut["summary"]["ratios"]) + ".", ""]
    return "\n".join(lines)


def cuts_table(cut: dict[str, Any]) -> Table:
    """One cut's summary: mean ± std over seeds per model and flavour, and the goal ratios."""
    title = (f"cut {cut['quantile']:g}: {cut['history_ratings']:,} HISTORY / {cut['stream_ratings']:,} STREAM "
             f"ratings; {_ratios_line(cut['summary']['ratios'])}")  # fmt: skip
    table = Table(title=title)
    for col in ("model", "flavour", "runs", "HR@20", "warm HR", "cold HR", "NDCG@20", "coverage", "novelty"):
        table.add_column(col, justify="left" if col in ("model", "flavour") else "right")
    for model, flavour in _row_order(cut):
        m = cut["summary"]["models"][model][flavour]
        table.add_row(model, flavour, str(m["hr"]["n"]), _spread(m["hr"]), _spread(m["warm_hr"]),
                      _spread(m["cold_hr"]), _spread(m["ndcg"]), _spread(m["coverage"], 3),
                      _spread(m["novelty"], 2))  # fmt: skip
    return table


def prequential_table(report: dict[str, Any]) -> Table:
    rows = report["prequential"]
    events = rows[0]["groups"] if rows else {}
    table = Table(title="prequential (HR@20, NDCG@20, MRR@100); events: " + ", ".join(
        f"{g} {v['events']:,}" for g, v in events.items()))  # fmt: skip
    for col in ("model", "flavour", "HR@20", "NDCG@20", "MRR@100", "warm HR", "cold HR", "coverage",
                "diversity", "novelty"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("model", "flavour") else "right")
    for r in rows:
        g = r["groups"]
        table.add_row(
            r["model"], r["flavour"], f"{g['overall']['hr']:.4f}", f"{g['overall']['ndcg']:.4f}",
            f"{g['overall']['mrr']:.4f}", f"{g['warm']['hr']:.4f}", f"{g['cold']['hr']:.4f}",
            f"{r['coverage']:.3f}", f"{r['diversity']:.3f}", f"{r['novelty']:.2f}",
        )  # fmt: skip
    return table


def next_period_table(report: dict[str, Any]) -> Table:
    table = Table(title="static next period (users with history)")
    for col in ("model", "users", "Recall@20", "NDCG@100"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in report["next_period"]:
        table.add_row(r["model"], str(r["users"]), f"{r['recall']:.4f}", f"{r['ndcg']:.4f}")
    return table
