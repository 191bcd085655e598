"""``reelstream explore-eval``: the current hybrid VAE, exploit vs exploration arms, prequential STREAMING.

Writes ``var/reports/exploration.json`` (the dashboard's arms panel reads it) and prints the table
(``docs/evaluation.md``, "Exploration").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reelstream.console import console
from reelstream.settings import get_settings
from reelstream.shell.commands.options import DataOption, ModelDirOption

__all__ = ["DEFAULT_ARMS", "explore_eval"]

#: Thompson at three scales, UCB at two (the figures in docs/evaluation.md, "Exploration").
DEFAULT_ARMS = ["thompson:0.5", "thompson:1", "thompson:2", "ucb:1", "ucb:3"]


def explore_eval(
    arm: Annotated[
        list[str] | None,
        typer.Option(help="KIND:SCALE, repeatable (KIND thompson or ucb). Default: " + ", ".join(DEFAULT_ARMS) + "."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the Thompson draws.")] = 0,
    model_dir: ModelDirOption = None,
    data: DataOption = None,
    output: Annotated[
        Path | None, typer.Option(help="JSON file to write (default var/reports/exploration.json).")
    ] = None,
) -> None:
    """HR@20, NDCG@20, coverage, novelty and diversity of exploit and each exploration arm, side by side."""
    from models.artifacts import write_json
    from models.exploration_eval import evaluate_arms, parse_arm
    from models.loading import load_evaluated

    arms = [parse_arm(spec) for spec in (arm or DEFAULT_ARMS)]  # bad specs fail before anything loads
    settings = get_settings()
    interactions, folder, vae = load_evaluated(settings.store_dir, settings.models_dir, model_dir=model_dir, data=data)
    report = evaluate_arms(vae, interactions, arms, seed=seed, log=console.print)
    report |= {"model_dir": str(folder), "model_version": vae.runtime_.version}
    out = output or settings.reports_dir / "exploration.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    console.print(arms_table(report))
    console.print(f"written to {out}")


def arms_table(report: dict[str, Any]) -> Table:
    """The report's arms as a rich table."""
    rows = report["arms"]
    table = Table(title=f"exploration arms, prequential STREAMING ({rows[0]['events']:,} events)" if rows else "")
    for col in ("arm", "HR@20", "NDCG@20", "MRR@100", "warm HR", "cold HR", "coverage", "novelty", "diversity"):
        table.add_column(col, justify="left" if col == "arm" else "right")
    for r in rows:
        table.add_row(
            r["arm"], f"{r['hr']:.4f}", f"{r['ndcg']:.4f}", f"{r['mrr']:.4f}", f"{r['warm_hr']:.4f}",
            f"{r['cold_hr']:.4f}", f"{r['coverage']:.3f}", f"{r['novelty']:.2f}", f"{r['diversity']:.3f}",
        )  # fmt: skip
    return table
