"""``reelstream infra up|down|status``: the local broker and Redis server."""

from __future__ import annotations

import typer

from reelstream.console import console
from reelstream.settings import get_settings
from reelstream.shell import local_services
from streams.admin import ensure_topics_sync

app = typer.Typer(help="Start, stop and inspect the local Kafka-protocol broker and Redis server.")


@app.command("up")
def up() -> None:
    """Start a local broker (Tansu) and Redis unless something already answers there; create the topics."""
    settings = get_settings()
    for line in local_services.up(settings):
        console.print(line)
    for status in ensure_topics_sync(settings):
        console.print(status.summary)


@app.command("down")
def down() -> None:
    """Stop the broker and Redis that reelstream started."""
    for line in local_services.down(get_settings()):
        console.print(line)


@app.command("status")
def status() -> None:
    """Show whether each service answers and who runs it; exit 1 when one is down."""
    statuses = local_services.status(get_settings())
    for s in statuses:
        console.print(s.summary)
    if not all(s.answers for s in statuses):
        raise typer.Exit(1)
