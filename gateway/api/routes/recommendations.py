"""GET /recommendations/{user_id}.

The route is a coroutine (the service reads Redis asynchronously and scores inline; no threadpool
hop). It answers with the JSON bytes of the :class:`RecommendationList` the service built
(``model_dump_json``, pydantic's Rust serializer) instead of returning the model: FastAPI would
otherwise validate the already-valid model a second time before serializing it. ``response_model``
stays declared, so the OpenAPI schema is the same.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from gateway.api.deps import GatewayDep
from gateway.api.models import RecommendationList
from gateway.api.routes._params import UserId, check_genres, field_error
from gateway.rules.document import Segment

router = APIRouter(prefix="/recommendations", tags=["recommendations"])


@router.get("/{user_id}", response_model=RecommendationList)
async def recommendations(
    gateway: GatewayDep,
    user_id: UserId,
    k: Annotated[int, Query(ge=1, le=100, description="List length.")] = 20,
    genres: Annotated[
        list[str], Query(max_length=20, description="Preferred genres (boost; shapes cold-start lists).")
    ] = [],  # noqa: B006 - FastAPI copies defaults
    exclude_genres: Annotated[list[str], Query(max_length=20, description="Genres to leave out of this list.")] = [],  # noqa: B006
    variant: Annotated[
        str | None, Query(max_length=64, description="A/B arm to use instead of the user's own (`variants.arms`).")
    ] = None,
    segment: Annotated[
        Segment | None,
        Query(description="Segment rule set to use instead of the one the user's rating count gives."),
    ] = None,
    served_at_ms: Annotated[
        int | None,
        Query(
            ge=0,
            description="Replay traffic: the event time (epoch ms) the list is served at, recorded in its "
            "ImpressionEvent instead of the wall clock (`reelstream replay --serve-rate`).",
        ),
    ] = None,
) -> Response:
    """A ranked, rule-filtered, explained list; `degraded: true` when Redis was unreachable.

    `variant=` and `segment=` switch the effective rule set for this request (the dashboard's rule-set
    switcher); the response's `variant` and `segment` name the one used.
    """
    known = gateway.catalog.genre_names
    check_genres("genres", genres, known)
    check_genres("exclude_genres", exclude_genres, known)
    if variant is not None:
        arms = [name for name, _ in gateway.rules.current().arms]
        if variant not in arms:
            raise field_error(("query", "variant"), f"unknown variant {variant!r}; known: {arms}", variant)
    result = await gateway.recommend(user_id, k, genres, exclude_genres, variant=variant, segment=segment)
    if gateway.impressions is not None:  # a queue append: never slows or fails the answer
        novelty = gateway.catalog.novelty([item.movie_id for item in result.items])
        if served_at_ms is None:
            gateway.impressions.record(result, gateway.wall_ms(), "wall", novelty)
        else:
            gateway.impressions.record(result, served_at_ms, "event", novelty)
    return Response(result.model_dump_json(), media_type="application/json")
