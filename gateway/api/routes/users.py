"""GET /users (search) and /users/{user_id}/profile."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway.api.deps import GatewayDep
from gateway.api.models import UserList, UserProfile
from gateway.api.routes._params import UserId

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/{user_id}/profile", response_model=UserProfile, responses={404: {}, 503: {}})
def profile(gateway: GatewayDep, user_id: UserId) -> UserProfile:
    """Statistics, top genres, recent ratings, segment and latent uncertainty (503 when Redis is down)."""
    return gateway.profile(user_id)


@router.get("", response_model=UserList, responses={503: {}})
def search(
    gateway: GatewayDep,
    q: Annotated[str, Query(pattern=r"^[0-9]{0,19}$", description="Leading digits of the user id.")] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> UserList:
    """User ids with state in Redis starting with `q` (a bounded scan; freshness-probe users left out)."""
    return UserList(users=gateway.search_users(q, limit))
