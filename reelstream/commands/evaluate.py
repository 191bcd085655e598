"""``reelstream evaluate``: popularity, EASE and the current hybrid VAE on the prequential protocol.

The protocol is written down in ``docs/evaluation.md``. Results go to
``var/reports/evaluation.json`` (and a time-stamped copy) and print as a table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reelstream.console import console
from reelstream.settings import get_settings

__all__ = ["run"]


def run(
    model_dir: Annotated[
        Path | None, typer.Option(help="Model folder to evaluate (default: the one var/models/CURRENT names).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Evaluate on a MovieLens folder (split at 0.8) instead of the store.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="JSON file to write (default var/reports/evaluation.json).")
    ] = None,
    ease_l2: Annotated[float, typer.Option(help="EASE ridge penalty.")] = 200.0,
) -> None:
    """Score STATIC and STREAMING flavours of every model and write the JSON report."""
    from models.artifacts import write_json
    from models.ease import EASE
    from models.evaluation.report import evaluate_models
    from models.hybrid_vae import HybridVAE
    from models.loading import load_interactions
    from models.popularity import Popularity
    from models.runtime import current_model_dir
    from reelstream.errors import ModelError

    settings = get_settings()
    interactions = load_interactions(settings.store_dir, data=data)
    folder = model_dir or current_model_dir(settings.models_dir)
    vae = HybridVAE.load(folder, expect_data_version=interactions.version if data is None else None)
    if vae.runtime_.n_items != interactions.n_items:
        raise ModelError(f"{folder}: model has {vae.runtime_.n_items} movies, the data {interactions.n_items}")
    vae.prime(interactions.history)  # the streaming item prior's decayed counts at the split
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
