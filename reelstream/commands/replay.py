"""``reelstream replay``: produce the feature store's STREAM split into the ratings topic, resumably."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bootstrap.store import load_store
from reelstream.console import console
from reelstream.errors import ConfigError
from reelstream.settings import get_settings
from streams.admin import ensure_topics_sync
from streams.replay import Pace, replay

__all__ = ["run"]


def run(
    rate: Annotated[float | None, typer.Option(min=0.001, help="Events per second.")] = None,
    speed: Annotated[float | None, typer.Option(min=0.001, help="Multiple of event time (86400: a day per s).")] = None,
    max_: Annotated[bool, typer.Option("--max", help="As fast as possible (the default).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in var/run.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay only the first N events.")] = None,
) -> None:
    """Replay the STREAM events in event-time order, keyed by user, with a progress bar and a summary."""
    if sum(x is not None and x is not False for x in (rate, speed, max_ or None)) > 1:
        raise ConfigError("choose one of --rate, --speed and --max")
    settings = get_settings()
    store = load_store(settings.store_dir)
    stream = store.stream
    ensure_topics_sync(settings)
    total = stream.height if limit is None else min(limit, stream.height)
    with Progress(TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("replay", total=total)
        summary = asyncio.run(
            replay(
                settings, stream, fingerprint=f"store v{store.version}, {stream.height} stream events",
                pace=Pace(rate=rate, speed=speed), resume=resume, limit=limit,
                on_progress=lambda done: bar.update(task, completed=done),
            )
        )  # fmt: skip
    if summary.reset:
        # the topic no longer holds what the checkpoint acknowledged (streams/replay.py: a reset log)
        console.print(f"reset log (broker restarted?): continuing from index {summary.start:,} on the new log")
    if summary.resent:
        console.print(f"a broker connection broke: sent {summary.resent:,} acknowledged events again")
    console.print(
        f"replayed {summary.events:,} events (indexes {summary.start:,}..{summary.end:,}, "
        f"{summary.skipped:,} already in the topic) in {summary.seconds:.2f} s: {summary.events_per_s:,.0f} events/s"
    )
