"""``reelstream seed [--reset] [--per-event]``: the feature store's HISTORY into Redis, in bulk or per event."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from reelstream.console import console
from reelstream.settings import get_settings

__all__ = ["seed"]


def seed(
    reset: Annotated[
        bool, typer.Option(help="Delete every rs:* key (SCAN + UNLINK) and rewind the worker group first.")
    ] = False,
    batch: Annotated[
        int | None,
        typer.Option(min=1, help="Rows per batch (default: settings.seed_bulk_rows, per event settings.seed_batch)."),
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Seed only the first N HISTORY rows.")] = None,
    per_event: Annotated[
        bool, typer.Option("--per-event", help="Fold every rating in through the worker's path (the reference).")
    ] = False,
) -> None:
    """Apply every HISTORY rating to Redis, exactly once (a rerun applies nothing).

    By default users' final states are computed at once and written (bulk); --per-event folds the ratings in
    time order through the worker's own path, the result the bulk path is tested to equal.
    """
    from streams.seed import seed_history

    settings = get_settings()
    with Progress(
        TextColumn("[bold]seed[/] HISTORY"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task("seed", total=None)
        summary = seed_history(
            settings, reset=reset, batch_size=batch, limit=limit, per_event=per_event,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    if summary.deleted_keys or reset:
        console.print(f"reset: {summary.deleted_keys:,} rs:* keys deleted")
    if summary.rewound:
        console.print(f"worker group {settings.app_id!r} rewound on {summary.rewound} partition(s): "
                      "the worker re-reads the stream from the start")  # fmt: skip
    console.print(
        f"seeded {summary.applied:,} ratings of {summary.users:,} users "
        f"(store v{summary.store_version}, model {summary.model_version}; {summary.skipped:,} already applied, "
        f"{summary.dead:,} refused) in {summary.seconds:.2f} s ({summary.path}): {summary.ratings_per_s:,.0f} ratings/s"
    )
    if summary.dead_reasons:
        console.print("refused: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.dead_reasons.items())))
