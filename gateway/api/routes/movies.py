"""GET /movies/{movie_id} and /movies/{movie_id}/similar; POST /movies (bearer token) announces a movie.

A 202 from POST /movies means a MovieEvent the worker stores was acknowledged by the broker: the body
passed the announcement contract (schemas/movies.py) and the worker's own rule. The movie joins this
gateway's catalogue at its next scan of ``rs:movie:*`` (``gateway_movie_refresh_s``) after the worker
applied it, scored from its side features.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError

from gateway.api.deps import AdminDep, GatewayDep, ProducerDep, SettingsDep
from gateway.api.models import MovieAccepted, MovieCreate, MovieDetail, SimilarList
from gateway.api.routes._params import MovieId
from streams.events import MovieInCatalogue, MovieRefused, judged_movie, tags_without_feature

router = APIRouter(prefix="/movies", tags=["movies"])


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=MovieAccepted, responses={401: {}, 409: {}, 503: {}}
)
async def post_movie(
    body: MovieCreate, gateway: GatewayDep, producer: ProducerDep, settings: SettingsDep, _: AdminDep
) -> MovieAccepted:
    """Announce a new movie (or replace an announced one's metadata): produce a MovieEvent keyed by its id.

    422 naming the field for a body the contract refuses; 409 for a movie the catalogue already serves from
    trained rows (the model's, or the feature store's); 503 with ``Retry-After`` when the broker is unreachable.
    """
    replaces = body.movie_id in gateway.announced
    try:
        judged_movie(body.movie_id, body.title, body.genres, body.year, body.tags,
                     in_catalogue=gateway.serves_unannounced)  # fmt: skip
        sent = await producer.announce(body.movie_id, body.title, body.genres, body.year, body.tags,
                                       in_catalogue=gateway.serves_unannounced)  # fmt: skip
    except MovieInCatalogue as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, exc.detail) from None
    except MovieRefused as exc:
        raise RequestValidationError(
            [{"type": "movie_refused", "loc": ("body", exc.field), "msg": exc.detail,
              "input": getattr(body, exc.field, None)}]
        ) from None  # fmt: skip
    return MovieAccepted(
        movie_id=sent.movie_id, title=body.title, genres=body.genres, year=body.year, tags=body.tags,
        topic=settings.topic_movies, partition=sent.partition, offset=sent.offset, replaces=replaces,
        tags_without_feature=tags_without_feature(gateway.catalog.side, body.tags),
    )  # fmt: skip


@router.get("/{movie_id}", response_model=MovieDetail, responses={404: {}})
def movie(gateway: GatewayDep, movie_id: MovieId) -> MovieDetail:
    return gateway.movie(movie_id)


@router.get("/{movie_id}/similar", response_model=SimilarList, responses={404: {}})
def similar(gateway: GatewayDep, movie_id: MovieId, k: Annotated[int, Query(ge=1, le=100)] = 10) -> SimilarList:
    """Nearest movies by cosine of their item-decoder rows."""
    return gateway.similar(movie_id, k)
