"""``reelstream gateway``: serve the recommendation API with uvicorn."""

from __future__ import annotations

import typer

from reelstream.console import console
from reelstream.settings import get_settings


def gateway_cmd(
    host: str | None = typer.Option(None, help="Bind address (default: settings.gateway_host)."),
    port: int | None = typer.Option(None, help="Port (default: settings.gateway_port)."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve GET /recommendations, /users, /movies, POST /ratings, /rules, /health, /stats and /metrics.

    Refuses (exit 2, before anything is loaded) an empty or weak REELSTREAM_ADMIN_TOKEN, and a
    non-loopback ``--host`` unless that token was set explicitly; without one it uses (and creates
    on first start) ``var/admin_token``.
    """
    settings = get_settings()
    bind = host or settings.gateway_host
    settings.admin_secret(bind)  # raises ConfigError: the CLI prints it and exits 2
    if not settings.admin_token_explicit:
        console.print(f"admin token: {settings.admin_token_path} (set REELSTREAM_ADMIN_TOKEN to choose one)")

    import uvicorn

    from gateway._blas import limit_blas_threads
    from gateway.app import create_app

    limit_blas_threads(1)  # requests run concurrently already; see gateway/_blas.py

    uvicorn.run(
        create_app(settings),
        host=bind,
        port=port or settings.gateway_port,
        log_level=log_level,
        access_log=False,
    )
