"""POST /ratings."""

from __future__ import annotations

from fastapi import APIRouter, status

from gateway.api.deps import GatewayDep, ProducerDep, SettingsDep
from gateway.api.models import RatingAccepted, RatingCreate
from gateway.api.routes._params import field_error

router = APIRouter(prefix="/ratings", tags=["ratings"])


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=RatingAccepted, responses={503: {}})
async def post_rating(
    body: RatingCreate, gateway: GatewayDep, producer: ProducerDep, settings: SettingsDep
) -> RatingAccepted:
    """Validate and produce a RatingEvent; the list reflects it once the worker applied it.

    503 with ``Retry-After`` when the broker is unreachable.
    """
    if gateway.catalog.index(body.movie_id) is None:
        raise field_error(("body", "movie_id"), f"movie {body.movie_id} is not in the catalogue", body.movie_id)
    sent = await producer.send(body.user_id, body.movie_id, body.rating, body.event_ts)
    gateway.telemetry.ratings.labels("accepted").inc()
    return RatingAccepted(
        event_id=sent.event_id, user_id=body.user_id, movie_id=body.movie_id, rating=body.rating,
        topic=settings.topic_ratings, partition=sent.partition, offset=sent.offset,
    )  # fmt: skip
