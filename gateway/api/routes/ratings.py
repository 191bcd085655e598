"""POST /ratings: a 202 means the worker will apply the event.

The body's bounds come from the rating contract's constants (``RatingCreate``); the route then runs the
contract's full verdict (schemas/ratings.py) with the worker's settings and the gateway's catalogue (the
model's movies plus the MovieEvent-announced ones it has seen, :meth:`Gateway.is_rateable`). A refusal is
a 422 that names the field and carries the reason as its ``type``; nothing reaches the topic for it.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, status
from fastapi.exceptions import RequestValidationError

from gateway.api.deps import GatewayDep, ProducerDep, SettingsDep
from gateway.api.models import RatingAccepted, RatingCreate
from schemas.ratings import RatingLimits, rating_verdict, user_key

router = APIRouter(prefix="/ratings", tags=["ratings"])

#: The body field each refusal reason is about.
FIELD_OF_REASON = {
    "bad_user": "user_id", "key_mismatch": "user_id", "reserved_user": "user_id",
    "rating_out_of_range": "rating", "bad_timestamp": "event_ts", "unknown_movie": "movie_id",
}  # fmt: skip


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=RatingAccepted, responses={503: {}})
async def post_rating(
    body: RatingCreate, gateway: GatewayDep, producer: ProducerDep, settings: SettingsDep
) -> RatingAccepted:
    """Judge by the rating contract, then produce a RatingEvent; the list reflects it once the worker applied it.

    422 (the reason as the error's ``type``) for an event the worker would refuse; 503 with ``Retry-After``
    when the broker is unreachable.
    """
    now_ms = int(time.time() * 1000)
    ts_ms = now_ms if body.event_ts is None else body.event_ts
    event = {"user_id": body.user_id, "movie_id": body.movie_id, "rating": body.rating, "event_ts": ts_ms,
             "source": "api"}  # fmt: skip
    limits = RatingLimits.from_settings(settings)
    refusal = rating_verdict(
        event, user_key(body.user_id), now_ms=now_ms, limits=limits, known_movie=gateway.is_rateable
    )
    if refusal is not None:
        gateway.telemetry.ratings.labels("refused").inc()
        field = FIELD_OF_REASON[refusal.reason]
        raise RequestValidationError(
            [{"type": refusal.reason, "loc": ("body", field), "msg": refusal.detail, "input": event[field]}]
        )
    sent = await producer.send(body.user_id, body.movie_id, body.rating, ts_ms, known_movie=gateway.is_rateable)
    gateway.telemetry.ratings.labels("accepted").inc()
    return RatingAccepted(
        event_id=sent.event_id, user_id=body.user_id, movie_id=body.movie_id, rating=body.rating,
        topic=settings.topic_ratings, partition=sent.partition, offset=sent.offset,
    )  # fmt: skip
