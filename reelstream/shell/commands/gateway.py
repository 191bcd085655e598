"""``reelstream gateway``: serve the recommendation API with uvicorn, in one process or several on one port."""

from __future__ import annotations

from typing import TypedDict

import typer

from reelstream.console import console
from reelstream.settings import get_settings

#: Seconds a stopping gateway process waits for open requests before it closes them (a bounded SIGTERM).
GRACEFUL_SHUTDOWN_S = 10


class _ServeOptions(TypedDict):
    """The ``uvicorn.run`` arguments one process and several share."""

    host: str
    port: int
    log_level: str
    access_log: bool
    timeout_graceful_shutdown: int


def gateway(
    host: str | None = typer.Option(None, help="Bind address (default: settings.gateway_host)."),
    port: int | None = typer.Option(None, help="Port (default: settings.gateway_port)."),
    workers: int = typer.Option(
        1, min=1, max=64, help="Gateway processes sharing the port (uvicorn workers; each loads the model)."
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve GET /recommendations, /users, /movies, POST /ratings, /rules, /health, /stats and /metrics.

    Refuses (exit 2, before anything is loaded) an empty or weak REELSTREAM_ADMIN_TOKEN, and a
    non-loopback ``--host`` unless that token was set explicitly; without one it uses (and creates
    on first start) ``var/admin_token``, which every worker process then reads.

    With ``--workers N`` uvicorn's supervisor binds the port once and N processes accept on it, each
    with its own model, response cache and metrics (``GET /metrics`` answers for the process that
    took the request; docs/gateway.md, "Several processes").
    """
    settings = get_settings()
    bind = host or settings.gateway_host
    settings.admin_secret(bind)  # raises ConfigError: the CLI prints it and exits 2
    if not settings.admin_token_explicit:
        console.print(f"admin token: {settings.admin_token_path} (set REELSTREAM_ADMIN_TOKEN to choose one)")

    import uvicorn

    from gateway.app import serving_app

    common = _ServeOptions(host=bind, port=port or settings.gateway_port, log_level=log_level, access_log=False,
                           timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)  # fmt: skip
    if workers == 1:
        uvicorn.run(serving_app(), **common)
    else:  # each process builds the app from the environment (the settings above come from it too)
        from reelstream.shell.gateway_processes import serve_processes

        serve_processes(uvicorn.Config("gateway.app:serving_app", factory=True, workers=workers, **common))
