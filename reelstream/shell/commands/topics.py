"""``reelstream topics create``: create the topics idempotently (``infra up`` runs it too)."""

from __future__ import annotations

import typer

from reelstream.console import console
from reelstream.settings import get_settings
from streams.admin import ensure_topics_sync

__all__ = ["app"]

app = typer.Typer(help="Kafka topics: ratings (keyed by user), movies, dead letters.")


@app.command("create")
def create() -> None:
    """Create every topic that does not exist yet (existing topics are left as they are)."""
    for status in ensure_topics_sync(get_settings()):
        console.print(status.summary)
