"""The worker's validation rules for MovieEvents; rating events follow the one rating contract.

A RatingEvent is judged by :func:`schemas.ratings.rating_verdict` (the rules every producer and the
bootstrap share, with their reasons and order); this module holds only what is the worker's alone.

Dead-letter reasons (the ``DeadLetter.reason`` values):

=======================  =====================================================================
``undecodable``          bytes that are not a RatingEvent/MovieEvent (schemas/wire.py)
``bad_user`` ...         a refused RatingEvent: :data:`schemas.ratings.REASONS`, in verdict order
``bad_movie_event``      a MovieEvent with a non-positive id or an empty title
=======================  =====================================================================
"""

from __future__ import annotations

from typing import Any

__all__ = ["movie_event_problem"]


def movie_event_problem(event: dict[str, Any]) -> str | None:
    """Why a decoded MovieEvent is unusable, or None."""
    if event["movie_id"] <= 0:
        return f"movie id {event['movie_id']} is not positive"
    if not event["title"].strip():
        return "empty title"
    return None
