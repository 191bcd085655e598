"""``reelstream lag``: consumer lag per partition with a Burrow-style verdict."""

from __future__ import annotations

import asyncio
import contextlib
import json

import redis
import typer
from rich.live import Live
from rich.table import Table

from monitoring.hit_rate import HitRateCheck, judge
from monitoring.lag import GroupLag, LagMonitor, PartitionLag, recorded_resets
from monitoring.liveness import worker_heartbeats
from reelstream.console import console
from reelstream.redis_client import redis_client
from reelstream.settings import Settings, get_settings
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


def challenger_note(challenger: Challenger | None, hit_rate: HitRateCheck | None = None) -> str:
    """The table's caption about the alarms that ask for a challenger (``rs:challenger``: the online model's
    drift alarms, falls of the live hit rate) and the hit-rate watch's verdict.

    >>> challenger_note(Challenger(requested=3, answered=1, last_alarm_ms=0, reason="drift"))
    'challenger: 2 alarm(s) ask for one (latest: drift): run `reelstream retrain`'
    >>> challenger_note(Challenger(), HitRateCheck(False, "not enough closed days: 0"))
    'challenger: no alarm; not enough closed days: 0'
    """
    if challenger is None:
        return "challenger: alarms unknown (Redis unreachable)"
    if challenger.pending:
        note = (f"challenger: {challenger.pending} alarm(s) ask for one (latest: {challenger.reason}): "
                "run `reelstream retrain`")  # fmt: skip
    elif challenger.requested:
        note = f"challenger: {challenger.requested} alarm(s), answered: {challenger.answer}"
    else:
        note = "challenger: no alarm"
    return note if hit_rate is None else f"{note}; {hit_rate.reason}"


def _alarms(settings: Settings) -> tuple[Challenger | None, HitRateCheck | None]:
    client = redis_client(settings.redis_url)
    try:
        return decode_challenger(client.hgetall(keys.CHALLENGER)), judge(client, settings)
    except redis.RedisError:
        return None, None
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
    topics = settings.consumed_topics
    monitor = LagMonitor(
        settings.kafka_bootstrap,
        group or settings.app_id,
        topics,
        window=window,
        liveness=worker_heartbeats(settings.redis_url),
        resets=recorded_resets(settings.redis_url, topics),
    )

    async def run() -> None:
        async with monitor:
            result = await monitor.sample()
            challenger, hit_rate = await asyncio.to_thread(_alarms, settings)
            if as_json:
                body = {**result.as_dict(), "challenger": None if challenger is None else challenger.as_dict(),
                        "hit_rate": None if hit_rate is None else hit_rate.as_dict()}  # fmt: skip
                console.print_json(json.dumps(body))
                return
            if not watch:
                console.print(render(result, challenger_note(challenger, hit_rate)))
                return
            note = challenger_note(challenger, hit_rate)
            with Live(render(result, note), console=console, refresh_per_second=4) as live:
                while True:
                    await asyncio.sleep(interval)  # the sampling period, not a synchronisation
                    result = await monitor.sample()
                    challenger, hit_rate = await asyncio.to_thread(_alarms, settings)
                    live.update(render(result, challenger_note(challenger, hit_rate)))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
