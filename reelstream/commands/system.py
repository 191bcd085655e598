"""``reelstream up`` / ``reelstream down``: the whole live system in one command."""

from __future__ import annotations

import signal

import typer

from reelstream import system
from reelstream.console import console
from reelstream.settings import get_settings


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the system like Ctrl-C does."""
    raise KeyboardInterrupt


def up(
    workers: int = typer.Option(1, min=1, max=8, help="Worker processes in the consumer group."),
    rate: float = typer.Option(200.0, min=1.0, help="Replay speed in events per second."),
    replay: bool = typer.Option(True, "--replay/--no-replay", help="Replay the STREAM split into Kafka."),
    detach: bool = typer.Option(False, "--detach", help="Return once everything runs (stop with `down`)."),
) -> None:
    """Start broker, Redis, worker(s), gateway and replay; bootstrap and train first when needed."""
    settings = get_settings()
    plan = system.SystemPlan(workers=workers, replay=replay, replay_rate=rate)
    lines = system.up(settings, plan, console.print)
    for line in lines:
        console.print(f"  {line}")
    url = system.gateway_url(settings)
    console.print(f"\n[bold green]reelstream is up.[/] Dashboard: {url}/   API docs: {url}/docs")
    console.print(f"Logs and pids: {settings.run_dir}   Lag: `reelstream lag --watch`")
    if detach:
        console.print("Stop it with `reelstream down`.")
        return
    console.print("Ctrl-C stops everything.")
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        reason = system.supervise(settings)
        console.print(f"[red]{reason}[/]")
    except KeyboardInterrupt:
        console.print("\nstopping ...")
    for line in system.down(settings):
        console.print(f"  {line}")


def prepare() -> None:
    """Create topics, bootstrap, train and seed HISTORY where missing or stale (broker and Redis must answer)."""
    for line in system.prepare(get_settings(), console.print):
        console.print(f"  {line}")


def down() -> None:
    """Stop everything `reelstream up` started (replay, gateway, workers, then broker and Redis)."""
    for line in system.down(get_settings()):
        console.print(line)
