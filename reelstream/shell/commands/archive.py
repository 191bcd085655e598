"""``reelstream archive`` and ``reelstream rebuild``: the second copy of the stream, and Redis computed from it.

``archive`` is a long-running process (``reelstream up`` starts and supervises it) that appends every
ratings and movies record to the archive's Parquet segments; it never exits on a broker, Redis or disk
error, only on SIGINT/SIGTERM, after writing what it has buffered (:mod:`streams.archive`). ``rebuild``
recomputes the Redis feature tables from HISTORY and the archive when they are missing, stale or partial
(:mod:`streams.rebuild`; the worker does the same by itself). See ``docs/durability.md``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer
from redis.exceptions import RedisError

from reelstream.console import console
from reelstream.errors import InfraError
from reelstream.settings import get_settings

__all__ = ["archive", "rebuild"]


def archive(
    loglevel: Annotated[str, typer.Option(help="Log level (progress lines are INFO).")] = "info",
) -> None:
    """Archive the ratings and movies topics, exactly once by offset, until stopped (SIGINT/SIGTERM)."""
    from streams.archive import run_archiver

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    asyncio.run(run_archiver(get_settings()))


def rebuild(
    force: Annotated[
        bool, typer.Option(help="Rebuild even when Redis holds the current view (refused while workers run).")
    ] = False,
) -> None:
    """Rebuild the Redis feature tables from HISTORY and the archive when they are missing, stale or partial."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from reelstream.redis_client import redis_client
    from streams.rebuild import rebuild as force_rebuild
    from streams.rebuild import rebuild_if_needed

    settings = get_settings()
    client = redis_client(settings.redis_url)
    tasks: dict[str, TaskID] = {}
    try:
        with Progress(
            TextColumn("[bold]rebuild[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console,
        ) as bar:  # fmt: skip

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase.upper() if phase == "history" else phase, total=total)
                bar.update(tasks[phase], completed=done, total=total)

            summary = (force_rebuild if force else rebuild_if_needed)(settings, client, on_progress=progress)
    except RedisError as exc:
        raise InfraError(f"Redis at {settings.redis_url} unreachable: {exc}") from None
    finally:
        client.close()
    if summary is None:
        marker = "current store and model version, complete"
        console.print(f"Redis already holds the view ({marker}); nothing to rebuild (--force rebuilds anyway)")
        return
    console.print(f"rebuilt ({summary})")
    if summary.dead_reasons:
        console.print("refused: " + ", ".join(f"{k} {v:,}" for k, v in sorted(summary.dead_reasons.items())))
