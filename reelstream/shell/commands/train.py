"""``reelstream train``: fit the hybrid VAE on the feature store and publish a versioned model folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from reelstream.console import console
from reelstream.settings import get_settings

__all__ = ["train", "validation_table"]


def train(
    device: Annotated[str, typer.Option(help="cpu, or cuda for a GPU.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of every random draw (same seed, same weights).")] = 0,
    hidden: Annotated[int, typer.Option(min=1, help="Encoder hidden width.")] = 256,
    latent: Annotated[int, typer.Option(min=1, help="Latent width (the decoder's item rows).")] = 64,
    max_epochs: Annotated[int, typer.Option(min=1, help="Upper bound on epochs (early stopping ends sooner).")] = 100,
    members: Annotated[int, typer.Option(min=1, help="Seeds trained and served as one (scoring cost x members).")] = 1,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Users per batch (default: 128, or 1,024 above 500,000 ratings).")
    ] = None,
    sampled_softmax: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Negative movies drawn per batch; 0: exact softmax "
            "(default: 0, or 4,096 above 500,000 ratings and 20,000 movies).",
        ),
    ] = None,
    budget_minutes: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Wall-clock budget in minutes, split over the run's phases "
            "(default: none, or 20 above 500,000 ratings).",
        ),
    ] = None,
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
    evaluate: Annotated[bool, typer.Option(help="Score the STREAMING walk over STREAM into the metadata.")] = True,
) -> None:
    """Train on HISTORY, stop early on held-out users, write var/models/mNNNN and point CURRENT at it."""
    import time

    from models.artifacts import publish
    from models.budget import final_fit_seconds, plan
    from models.evaluation.batched import walk_model
    from models.hybrid_vae import HybridVAE
    from models.loading import load_interactions

    started = time.perf_counter()
    settings = get_settings()
    interactions = load_interactions(settings.store_dir, data=data)
    budget = plan(len(interactions.history), interactions.n_items, batch_size=batch_size,
                  sampled_softmax=sampled_softmax, budget_minutes=budget_minutes)  # fmt: skip
    console.print(
        f"data: store version {interactions.version}, {len(interactions.history):,} HISTORY ratings, "
        f"{interactions.n_items:,} movies, {interactions.n_side} side features; batches of {budget.batch_size}, "
        + (f"sampled softmax ({budget.sampled_softmax:,} drawn movies)" if budget.sampled_softmax else "exact softmax")
        + (f", budget {budget.budget_s / 60:.0f} min" if budget.budget_s else "")
    )
    params: dict[str, Any] = dict(hidden=hidden, latent=latent, max_epochs=max_epochs, members=members, seed=seed,
                                  device=device, batch_size=budget.batch_size,
                                  sampled_softmax=budget.sampled_softmax)  # fmt: skip
    if prior_beta is not None:
        params["prior_beta"] = prior_beta
    if prior_half_life_days is not None:
        params["prior_half_life_days"] = prior_half_life_days
    tuning, warm = None, None
    if tune:
        from models.tuning import self_configure, with_choice

        inner = {**params, "max_seconds": budget.seconds("validation_fit")}
        with _fit_progress("validation fit (inner HISTORY)", max_epochs * members) as (on_epoch, on_step):
            tuning = self_configure(inner, interactions, baselines=False, log=console.log,
                                    max_seconds=budget.seconds("search"), max_events=budget.walk_events,
                                    on_epoch=on_epoch,
                                    on_step=on_step)  # fmt: skip
        params = with_choice(params, tuning)
        console.print(validation_table(tuning.as_dict()))
        warm = tuning.inner_model if budget.budget_s is not None else None  # type: ignore[attr-defined]
    final_s = budget.seconds("final_fit")
    if budget.budget_s is not None and tuning is not None:  # what is left, the tail reserved (a deadline)
        inner = tuning.inner_model  # type: ignore[attr-defined]
        walk_s = tuning.seconds["search"] / max(len(tuning.trials), 1) * 50_000 / max(tuning.events, 1)
        ratio = len(interactions.history) / max(tuning.inner_history_ratings, 1)  # type: ignore[attr-defined]
        elapsed = time.perf_counter() - started
        final_s = final_fit_seconds(budget.budget_s, elapsed, finish_s=inner.finish_seconds_, history_ratio=ratio,
                                    walk_s=walk_s)  # fmt: skip
        console.print(f"final fit: {final_s:.0f} s of the {budget.budget_s - elapsed:.0f} s the budget has left")
    model = HybridVAE(**{**params, "max_seconds": final_s})
    with _fit_progress("training" + (" (warm start)" if warm else ""), max_epochs * model.members) as (ep, st):
        model.fit(interactions, on_epoch=ep, on_step=st, warm_start=warm)
    metrics: dict[str, float] = {"val_hr_at_20": float(model.runtime_.metadata["val_hr_at_20"] or 0.0)}
    if tuning is not None:
        metrics["validation_walk_hr_at_20"] = tuning.hr
        metrics["validation_walk_popularity_hr_at_20"] = tuning.hr / tuning.lift_over_popularity()
    if evaluate and len(interactions.stream):
        with console.status("evaluation: the STREAMING walk over STREAM…"):
            groups = walk_model(model, interactions)
        for group, m in groups.items():
            metrics[f"prequential_{group}_hr_at_20"] = m["hr"]
        metrics["prequential_overall_ndcg_at_20"] = groups["overall"]["ndcg"]
        metrics["prequential_scored_events"] = groups["overall"]["events"]

    def write(folder: Path, name: str) -> None:
        model.runtime_.metadata.update(model_version=name, data_version=interactions.version, metrics=metrics)
        if tuning is not None:
            model.runtime_.metadata["self_configuration"] = tuning.as_dict()
        model.save(folder)

    folder = publish(settings.models_dir, write)
    meta = model.runtime_.metadata
    console.print(
        f"[bold green]model {folder.name}[/] written to {folder}: {meta['epochs']} epochs "
        f"(best {meta['best_epoch']}), {meta['training_seconds']:.1f} s on {device}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    if tuning is not None:
        console.print(f"  validation walk: HR@20 {tuning.hr:.4f} = {tuning.lift_over_popularity():.2f} x the "
                      f"recency-tuned popularity baseline")  # fmt: skip
    for key, value in metrics.items():
        console.print(f"  {key:<34} {value:.4f}")


@contextmanager
def _fit_progress(label: str, max_epochs: int) -> Iterator[tuple[Callable[..., None], Callable[[int, int], None]]]:
    """A rich bar over one epoch's batches (with its ETA), the epoch count, loss and validation HR@20."""
    with Progress(
        TextColumn(f"[bold]{label}[/]"), BarColumn(), TextColumn("epoch {task.fields[epoch]}/{task.fields[of]}"),
        TextColumn("loss {task.fields[loss]:.2f}"), TextColumn("val HR@20 {task.fields[val]:.4f}"),
        TextColumn("best @{task.fields[best]}"), TimeElapsedColumn(), TextColumn("epoch ETA"),
        TimeRemainingColumn(), console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task(label, total=1, epoch=1, of=max_epochs, loss=0.0, val=0.0, best=0)

        def on_step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def on_epoch(r: Any) -> None:
            progress.reset(task, total=progress.tasks[0].total, epoch=r.epoch + 1, of=max_epochs, loss=r.loss,
                           val=r.val_recall, best=r.best_epoch)  # fmt: skip

        yield on_epoch, on_step


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
