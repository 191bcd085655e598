"""``reelstream train``: fit the hybrid VAE on the feature store and publish a versioned model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from reelstream.console import console
from reelstream.settings import get_settings

__all__ = ["run", "validation_table"]


def run(
    device: Annotated[str, typer.Option(help="cpu, or cuda for a GPU.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of every random draw (same seed, same weights).")] = 0,
    hidden: Annotated[int, typer.Option(min=1, help="Encoder hidden width.")] = 256,
    latent: Annotated[int, typer.Option(min=1, help="Latent width (the decoder's item rows).")] = 64,
    max_epochs: Annotated[int, typer.Option(min=1, help="Upper bound on epochs (early stopping ends sooner).")] = 100,
    members: Annotated[int, typer.Option(min=1, help="Seeds trained and served as one (scoring cost x members).")] = 1,
    prior_beta: Annotated[
        float | None, typer.Option(help="Weight of the streaming item prior (default: the model's tuned default).")
    ] = None,
    prior_half_life_days: Annotated[
        float | None, typer.Option(help="Half-life of the prior's decayed counts (must match the worker's).")
    ] = None,
    tune: Annotated[
        bool,
        typer.Option(
            help="Choose the scoring parameters (item prior, co-rating component) on the HISTORY-only "
            "validation walk first; --no-tune keeps the defaults and any given here."
        ),
    ] = True,
    data: Annotated[Path | None, typer.Option(help="Train on a MovieLens folder instead of the feature store.")] = None,
    evaluate: Annotated[bool, typer.Option(help="Score the prequential protocol into the metadata.")] = True,
) -> None:
    """Train on HISTORY, stop early on held-out users, write var/models/mNNNN and point CURRENT at it."""
    from models.artifacts import publish
    from models.evaluation import prequential
    from models.hybrid_vae import HybridVAE
    from models.loading import load_interactions

    settings = get_settings()
    interactions = load_interactions(settings.store_dir, data=data)
    console.print(
        f"data: store version {interactions.version}, {len(interactions.history):,} HISTORY ratings, "
        f"{interactions.n_items:,} movies, {interactions.n_side} side features"
    )
    params: dict[str, Any] = dict(hidden=hidden, latent=latent, max_epochs=max_epochs, members=members, seed=seed,
                                  device=device)  # fmt: skip
    if prior_beta is not None:
        params["prior_beta"] = prior_beta
    if prior_half_life_days is not None:
        params["prior_half_life_days"] = prior_half_life_days
    tuning = None
    if tune:
        from models.tuning import self_configure, with_choice

        with console.status("validation walk: fitting on the inner HISTORY, then searching…"):
            tuning = self_configure(params, interactions, baselines=False, log=console.log)
        params = with_choice(params, tuning)
        console.print(validation_table(tuning.as_dict()))
    model = HybridVAE(**params)
    with Progress(
        TextColumn("[bold]training[/]"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.2f}"), TextColumn("val HR@20 {task.fields[val]:.4f}"),
        TextColumn("best @{task.fields[best]}"), TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task("train", total=max_epochs * model.members, loss=0.0, val=0.0, best=0)
        model.fit(interactions, on_epoch=lambda r: progress.update(
            task, completed=r.epoch, loss=r.loss, val=r.val_recall, best=r.best_epoch))  # fmt: skip
        progress.update(task, total=len(model.history_))
    metrics: dict[str, float] = {"val_hr_at_20": float(model.runtime_.metadata["val_hr_at_20"] or 0.0)}
    if evaluate and len(interactions.stream):
        result = prequential(model, interactions, streaming=True)
        for group, m in result.groups.items():
            metrics[f"prequential_{group}_hr_at_20"] = m["hr"]
        metrics["prequential_overall_ndcg_at_20"] = result.groups["overall"]["ndcg"]
        model.prime(interactions.history)  # the walk counted STREAM into the prior: item_prior.npz is HISTORY's

    def write(folder: Path, name: str) -> None:
        model.runtime_.metadata.update(model_version=name, data_version=interactions.version, metrics=metrics)
        if tuning is not None:
            model.runtime_.metadata["self_configuration"] = tuning.as_dict()
        model.save(folder)

    folder = publish(settings.models_dir, write)
    meta = model.runtime_.metadata
    console.print(
        f"[bold green]model {folder.name}[/] written to {folder}: {meta['epochs']} epochs "
        f"(best {meta['best_epoch']}), {meta['training_seconds']:.1f} s on {device}"
    )
    for key, value in metrics.items():
        console.print(f"  {key:<34} {value:.4f}")


def validation_table(config: dict[str, Any]) -> Table:
    """The self-configuration's choice, with each parameter's neighbours: the validation table."""
    chosen, groups = config["chosen"], config["groups"]
    title = (f"validation walk ({config['events']:,} events of the inner STREAM): chosen HR@20 "
             f"{groups['overall']['hr']:.4f} (cold {groups['cold']['hr']:.4f}, warm {groups['warm']['hr']:.4f}); "
             f"{len(config['trials'])} settings in {config['seconds']['search']:.0f} s")  # fmt: skip
    table = Table(title=title)
    for col in ("parameter", "chosen", "where", "HR@20 at the neighbours"):
        table.add_column(col)
    for name, value in chosen.items():
        around = []
        for t in config["trials"]:
            if t[name] != value and all(t[k] == v for k, v in chosen.items() if k != name):
                around.append((t[name], t["groups"]["overall"]["hr"]))
        table.add_row(name, f"{value:g}", config["interior"][name],
                      "  ".join(f"{v:g}: {hr:.4f}" for v, hr in sorted(around)))  # fmt: skip
    for label, g in config.get("baselines", {}).items():
        table.add_row(label, "", "baseline", f"HR@20 {g['overall']['hr']:.4f}")
    return table
