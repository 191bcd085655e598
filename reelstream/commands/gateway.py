"""``reelstream gateway``: serve the recommendation API with uvicorn."""

from __future__ import annotations

import typer

from reelstream.settings import get_settings


def gateway_cmd(
    host: str | None = typer.Option(None, help="Bind address (default: settings.gateway_host)."),
    port: int | None = typer.Option(None, help="Port (default: settings.gateway_port)."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve GET /recommendations, /users, /movies, POST /ratings, /rules, /health, /stats and /metrics."""
    import uvicorn

    from gateway._blas import limit_blas_threads
    from gateway.app import create_app

    limit_blas_threads(1)  # requests run concurrently already; see gateway/_blas.py

    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.gateway_host,
        port=port or settings.gateway_port,
        log_level=log_level,
        access_log=False,
    )
