"""GET /users/{user_id}/profile."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import GatewayDep
from gateway.api.models import UserProfile
from gateway.api.routes._params import UserId

router = APIRouter(prefix="/users", tags=["users"])


@router.get("/{user_id}/profile", response_model=UserProfile, responses={404: {}, 503: {}})
def profile(gateway: GatewayDep, user_id: UserId) -> UserProfile:
    """Statistics, top genres, recent ratings, segment and latent uncertainty (503 when Redis is down)."""
    return gateway.profile(user_id)
