"""Dependencies, defined once as ``Annotated`` aliases; auth failures become HTTP errors here.

The app keeps its collaborators on ``app.state`` (built in :func:`gateway.app.create_app`);
tests swap settings through ``app.dependency_overrides[get_settings]``.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.producer import EventPublisher
from gateway.service import Gateway
from reelstream.errors import ConfigError
from reelstream.settings import Settings, get_settings

__all__ = ["AdminDep", "GatewayDep", "ProducerDep", "SettingsDep"]

SettingsDep = Annotated[Settings, Depends(get_settings)]


async def _gateway(request: Request) -> Gateway:  # async: a plain attribute read needs no threadpool hop
    return request.app.state.gateway


async def _producer(request: Request) -> EventPublisher:
    return request.app.state.producer


GatewayDep = Annotated[Gateway, Depends(_gateway)]
ProducerDep = Annotated[EventPublisher, Depends(_producer)]

_bearer = HTTPBearer(
    auto_error=False,
    description="The admin token: REELSTREAM_ADMIN_TOKEN, else the one generated in var/admin_token (mode 0600).",
)


def require_admin(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """401 without the admin token; 403 when the configured token is unusable (never accepted as a password)."""
    try:
        expected = settings.admin_secret()
    except ConfigError as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"admin routes are disabled: {exc}") from None
    if (
        credentials is None
        or not credentials.credentials
        or not secrets.compare_digest(credentials.credentials.encode(), expected.encode())
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


AdminDep = Annotated[None, Depends(require_admin)]
