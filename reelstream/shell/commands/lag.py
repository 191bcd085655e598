"""``reelstream lag``: consumer lag per partition with a Burrow-style verdict."""

from __future__ import annotations

import asyncio
import contextlib
import json

import redis
import typer
from rich.live import Live
from rich.table import Table

from monitoring.lag import GroupLag, LagMonitor, PartitionLag, recorded_resets
from monitoring.liveness import worker_heartbeats
from reelstream.console import console
from reelstream.redis_client import redis_client
from reelstream.settings import get_settings
from schemas import redis_keys as keys
from schemas.challenger import Challenger, decode_challenger

VERDICT_STYLE = {"OK": "green", "WARN": "yellow", "STALL": "magenta", "STOP": "red", "REWIND": "cyan",
                 "RESET": "bold red"}  # fmt: skip


def _reset(r: PartitionLag, now: float) -> str:
    """The latest recorded log reset: how long ago, and the old log's records the worker never read (lost but
    for those the producers sent again from their resend window, ``streams/resend.py``)."""
    if r.reset_at_ms is None:
        return ""
    return f"{max(now - r.reset_at_ms / 1000.0, 0.0):,.0f} s ago, {r.reset_lost:,} unread"


def challenger_note(challenger: Challenger | None) -> str:
    """The table's caption about the online model's drift alarms (``rs:challenger``).

    >>> challenger_note(Challenger(requested=3, answered=1, last_alarm_ms=0, reason="drift"))
    'online model: 2 drift alarm(s) ask for a challenger: run `reelstream retrain`'
    >>> challenger_note(Challenger())
    'online model: no drift alarm'
    """
    if challenger is None:
        return "online model: drift alarms unknown (Redis unreachable)"
    if challenger.pending:
        return f"online model: {challenger.pending} drift alarm(s) ask for a challenger: run `reelstream retrain`"
    if challenger.requested:
        return f"online model: {challenger.requested} drift alarm(s), answered: {challenger.answer}"
    return "online model: no drift alarm"


def _challenger(redis_url: str) -> Challenger | None:
    client = redis_client(redis_url)
    try:
        return decode_challenger(client.hgetall(keys.CHALLENGER))
    except redis.RedisError:
        return None
    finally:
        client.close()


def render(result: GroupLag, note: str | None = None) -> Table:
    """A rich table of one sample (``note``: its caption)."""
    style = VERDICT_STYLE.get(result.verdict, "")
    table = Table(title=f"group {result.group}: [{style}]{result.verdict}[/]  (total lag {result.total_lag:,})",
                  caption=note)  # fmt: skip
    for column in ("topic", "partition", "committed", "log end", "lag", "lag s", "rate/s", "verdict", "log reset"):
        table.add_column(column, justify="left" if column in {"topic", "verdict", "log reset"} else "right")
    for r in result.partitions:
        table.add_row(
            r.topic, str(r.partition), f"{r.committed:,}", f"{r.end:,}", f"{r.lag:,}", f"{r.lag_seconds:.1f}",
            "—" if r.rate is None else f"{r.rate:,.1f}", f"[{VERDICT_STYLE.get(r.verdict, '')}]{r.verdict}[/]",
            _reset(r, result.at),
        )  # fmt: skip
    return table


def lag(
    group: str = typer.Option(None, help="Consumer group (default: the worker's, the app id)."),
    watch: bool = typer.Option(False, "--watch", help="Keep sampling and redraw until Ctrl-C."),
    interval: float = typer.Option(2.0, min=0.2, help="Seconds between samples with --watch."),
    window: int = typer.Option(10, min=2, help="Samples the verdict looks at."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON sample instead of a table."),
) -> None:
    """Committed offset, log end, lag (messages and seconds), rate and verdict per partition."""
    settings = get_settings()
    monitor = LagMonitor(
        settings.kafka_bootstrap,
        group or settings.app_id,
        (settings.topic_ratings, settings.topic_movies),
        window=window,
        liveness=worker_heartbeats(settings.redis_url),
        resets=recorded_resets(settings.redis_url, (settings.topic_ratings, settings.topic_movies)),
    )

    async def run() -> None:
        async with monitor:
            result = await monitor.sample()
            challenger = await asyncio.to_thread(_challenger, settings.redis_url)
            if as_json:
                body = {**result.as_dict(), "challenger": None if challenger is None else challenger.as_dict()}
                console.print_json(json.dumps(body))
                return
            if not watch:
                console.print(render(result, challenger_note(challenger)))
                return
            with Live(render(result, challenger_note(challenger)), console=console, refresh_per_second=4) as live:
                while True:
                    await asyncio.sleep(interval)  # the sampling period, not a synchronisation
                    result = await monitor.sample()
                    challenger = await asyncio.to_thread(_challenger, settings.redis_url)
                    live.update(render(result, challenger_note(challenger)))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
