"""GET /movies/{movie_id} and /movies/{movie_id}/similar."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway.api.deps import GatewayDep
from gateway.api.models import MovieDetail, SimilarList
from gateway.api.routes._params import MovieId

router = APIRouter(prefix="/movies", tags=["movies"])


@router.get("/{movie_id}", response_model=MovieDetail, responses={404: {}})
def movie(gateway: GatewayDep, movie_id: MovieId) -> MovieDetail:
    return gateway.movie(movie_id)


@router.get("/{movie_id}/similar", response_model=SimilarList, responses={404: {}})
def similar(gateway: GatewayDep, movie_id: MovieId, k: Annotated[int, Query(ge=1, le=100)] = 10) -> SimilarList:
    """Nearest movies by cosine of their item-decoder rows."""
    return gateway.similar(movie_id, k)
