"""GET /reports and /reports/{name}: the JSON reports under ``settings.reports_dir``.

The bootstrap writes ``quality.json`` (data-quality rules) and ``reelstream evaluate``
writes ``evaluation.json``; whatever ``*.json`` exists there is served as it is.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status

from gateway.api.deps import SettingsDep
from gateway.api.models import ReportList

router = APIRouter(prefix="/reports", tags=["reports"])

ReportName = Annotated[
    str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", description="Report name without .json.",
              examples=["quality"])
]  # fmt: skip


@router.get("", response_model=ReportList)
def list_reports(settings: SettingsDep) -> ReportList:
    """Names of the reports that exist (time-stamped copies included)."""
    folder = settings.reports_dir
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return ReportList(reports=names)


@router.get("/{name}", response_model=dict[str, Any], responses={404: {}})
def get_report(name: ReportName, settings: SettingsDep) -> dict[str, Any]:
    """One report's JSON document."""
    path = settings.reports_dir / f"{name}.json"
    if ".." in name or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no report {name!r} in {settings.reports_dir.name}/")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"report {name!r} is unreadable: {exc}") from None
    return doc if isinstance(doc, dict) else {"items": doc}
