"""``reelstream worker [--workers N]``: run the Faust stream worker(s) of one consumer group.

With ``--workers N`` (N > 1) this process starts N child worker processes with
distinct web ports (``--web-port``, ``--web-port + 1``...) and names, forwards
SIGINT/SIGTERM to them, and exits when they all have.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Annotated

import typer

from reelstream.errors import ConfigError
from reelstream.settings import get_settings
from streams.admin import ensure_topics_sync

__all__ = ["worker"]


def worker(
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes in the group.")] = 1,
    web_port: Annotated[int | None, typer.Option(help="First web port (default: settings.worker_web_port).")] = None,
    name: Annotated[str | None, typer.Option(help="Worker name (default: settings.worker_name or host-pid).")] = None,
    loglevel: Annotated[str, typer.Option(help="Faust log level.")] = "warning",
) -> None:
    """Consume ratings and movies, keep user state and item features in Redis, dead-letter bad events."""
    settings = get_settings()
    port = settings.worker_web_port if web_port is None else web_port
    base = name or settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"
    ensure_topics_sync(settings)  # a Faust worker needs its topics before it starts (docs/infra.md)
    if workers == 1:
        _run_one(port, base, loglevel)
        return
    argv = [sys.executable, "-m", "reelstream.shell.cli", "worker", "--loglevel", loglevel]
    children = [subprocess.Popen([*argv, "--web-port", str(port + i), "--name", f"{base}-{i}"]) for i in range(workers)]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [child.wait() for child in children]
    if any(codes):
        raise typer.Exit(1)


def _run_one(web_port: int, name: str, loglevel: str) -> None:
    # The Faust app is built from the settings when streams.app is imported; this
    # process's port and name reach it through the settings' environment variables.
    os.environ["REELSTREAM_WORKER_WEB_PORT"] = str(web_port)
    os.environ["REELSTREAM_WORKER_NAME"] = name
    get_settings.cache_clear()
    if get_settings().worker_web_port != web_port:
        raise ConfigError(f"could not apply web port {web_port}")
    from streams import heap

    heap.tune()  # before any thread starts: at most two malloc arenas (streams/heap.py)
    from faust import Worker

    import streams.apply  # noqa: F401 - registers the batch consumer service, heartbeat timer and pages on the app
    from streams.app import app

    (get_settings().run_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust makes only the leaf folder
    Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
