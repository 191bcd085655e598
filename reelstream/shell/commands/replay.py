"""``reelstream replay``: produce the feature store's STREAM split into the ratings topic, resumably."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from bootstrap.store import load_store
from reelstream.addresses import gateway_url
from reelstream.console import console
from reelstream.errors import ConfigError
from reelstream.settings import get_settings
from streams.admin import ensure_topics_sync
from streams.replay import Pace, ReplaySummary
from streams.replay import replay as replay_stream
from streams.serve_traffic import ServeSummary, ServeTraffic

__all__ = ["EventRateColumn", "replay"]


class EventRateColumn(ProgressColumn):
    """Acknowledged events per second over rich's recent samples (the bar moves at each checkpoint, ~0.5 s)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("- events/s" if speed is None else f"{speed:,.0f} events/s", style="progress.data.speed")


def replay(
    rate: Annotated[
        float | None, typer.Option(min=0.0, help="Events per second; 0: as fast as the system takes (--max).")
    ] = None,
    speed: Annotated[float | None, typer.Option(min=0.001, help="Multiple of event time (86400: a day per s).")] = None,
    max_: Annotated[bool, typer.Option("--max", help="As fast as possible (the default).")] = False,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in var/run.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay only the first N events.")] = None,
    serve_rate: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Fraction of the users whose list is requested from the "
            "gateway just before each of their events (a live prequential walk; 0: none).",
        ),
    ] = 0.0,
) -> None:
    """Replay the STREAM events in event-time order, keyed by user, with a progress bar and a summary."""
    if sum(x is not None and x is not False for x in (rate, speed, max_ or None)) > 1:
        raise ConfigError("choose one of --rate, --speed and --max")
    settings = get_settings()
    store = load_store(settings.store_dir)
    stream = store.stream
    ensure_topics_sync(settings)
    total = stream.height if limit is None else min(limit, stream.height)
    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), EventRateColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("replay", total=total)
        began: list[int] = []

        def progress(done: int) -> None:
            """The first call is where a resume begins: a base, not a burst of speed."""
            if not began:
                began.append(done)
                bar.reset(task, total=total, completed=done)
            else:
                bar.update(task, completed=done)

        async def run() -> tuple[ReplaySummary, ServeSummary | None]:
            fingerprint = f"store v{store.version}, {stream.height} stream events"
            if not serve_rate:
                return await replay_stream(settings, stream, fingerprint=fingerprint, pace=Pace(rate=rate, speed=speed),
                                           resume=resume, limit=limit, on_progress=progress), None  # fmt: skip
            url = gateway_url(settings.gateway_host, settings.gateway_port)
            async with ServeTraffic(url, serve_rate) as traffic:
                done = await replay_stream(settings, stream, fingerprint=fingerprint, pace=Pace(rate=rate, speed=speed),
                                           resume=resume, limit=limit, on_progress=progress,
                                           serve=traffic)  # fmt: skip
            return done, traffic.summary

        summary, served = asyncio.run(run())
    if summary.reset:
        # the topic no longer holds what the checkpoint acknowledged (streams/replay.py: a reset log)
        console.print(f"reset log (broker restarted?): continuing from index {summary.start:,} on the new log")
    if summary.resent:
        console.print(f"a broker connection broke: sent {summary.resent:,} acknowledged events again")
    console.print(
        f"replayed {summary.events:,} events (indexes {summary.start:,}..{summary.end:,}, "
        f"{summary.skipped:,} already in the topic) in {summary.seconds:.2f} s: {summary.events_per_s:,.0f} events/s"
    )
    if served is not None:
        failed = ", ".join(f"{n:,} {why}" for why, n in sorted(served.errors.items())) or "none failed"
        console.print(f"served {served.served:,} of {served.requested:,} lists requested from the gateway ({failed})")
