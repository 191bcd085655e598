"""GET /: the live dashboard (static HTML, JS and CSS from ``gateway/static``, served at ``/static``).

No separate server and nothing fetched from elsewhere at run time: the chart
library (Chart.js, MIT) is vendored in ``gateway/static/vendor`` with its licence.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

router = APIRouter(tags=["dashboard"])


@router.get("/", include_in_schema=False, response_class=FileResponse)
def dashboard() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
