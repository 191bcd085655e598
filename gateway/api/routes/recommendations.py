"""GET /recommendations/{user_id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway.api.deps import GatewayDep
from gateway.api.models import RecommendationList
from gateway.api.routes._params import UserId, check_genres

router = APIRouter(prefix="/recommendations", tags=["recommendations"])


@router.get("/{user_id}", response_model=RecommendationList)
def recommendations(
    gateway: GatewayDep,
    user_id: UserId,
    k: Annotated[int, Query(ge=1, le=100, description="List length.")] = 20,
    genres: Annotated[
        list[str], Query(max_length=20, description="Preferred genres (boost; shapes cold-start lists).")
    ] = [],  # noqa: B006 - FastAPI copies defaults
    exclude_genres: Annotated[
        list[str], Query(max_length=20, description="Genres to leave out of this list.")
    ] = [],  # noqa: B006
) -> RecommendationList:
    """A ranked, rule-filtered, explained list; `degraded: true` when Redis was unreachable."""
    known = gateway.catalog.genre_names
    check_genres("genres", genres, known)
    check_genres("exclude_genres", exclude_genres, known)
    return gateway.recommend(user_id, k, genres, exclude_genres)
