"""Validation rules for incoming events: each a small pure function named as a question.

:func:`rating_verdict` alone sets the order (cheapest and most fundamental
first) and returns the first rule that refuses the event as ``(reason, detail)``,
or ``None`` for a valid event. The clock is an argument (``now_ms``), so the
rules are deterministic; ``tests/test_stream_rules.py`` holds the case table.

Reason classes (the ``DeadLetter.reason`` values):

=====================  =====================================================
``undecodable``        bytes that are not a RatingEvent/MovieEvent (codec)
``bad_user``           user id not positive
``rating_out_of_range``  not within 0.5..5.0, or not a half step
``bad_timestamp``      before ``event_min_ts_ms`` or too far in the future
``unknown_movie``      not in the model and never announced by a MovieEvent
``bad_movie_event``    a MovieEvent with a non-positive id or empty title
=====================  =====================================================
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "MAX_RATING",
    "MIN_RATING",
    "is_rating_bad",
    "is_timestamp_bad",
    "is_user_bad",
    "movie_event_problem",
    "rating_problem",
    "rating_verdict",
]

MIN_RATING = 0.5
MAX_RATING = 5.0


# Rule 1 - a user id must be a positive integer.
def is_user_bad(user_id: int) -> bool:
    return user_id <= 0


def rating_problem(rating: float) -> str | None:
    """Why ``rating`` is not a valid star rating, or None.

    >>> rating_problem(4.5), rating_problem(0.0), rating_problem(3.2)
    (None, 'rating 0.0 outside 0.5..5.0', 'rating 3.2 is not a half step')
    """
    if not math.isfinite(rating) or not MIN_RATING <= rating <= MAX_RATING:
        return f"rating {rating} outside {MIN_RATING}..{MAX_RATING}"
    if rating * 2 != int(rating * 2):
        return f"rating {rating} is not a half step"
    return None


# Rule 2 - a rating is 0.5..5.0 stars in half steps.
def is_rating_bad(rating: float) -> bool:
    return rating_problem(rating) is not None


# Rule 3 - event time is after the earliest plausible time and not beyond the clock's tolerance.
def is_timestamp_bad(ts_ms: int, now_ms: int, min_ts_ms: int, max_future_ms: int) -> bool:
    return ts_ms < min_ts_ms or ts_ms > now_ms + max_future_ms


def rating_verdict(event: dict[str, Any], now_ms: int, min_ts_ms: int, max_future_ms: int) -> tuple[str, str] | None:
    """The first rule that refuses a decoded RatingEvent, as ``(reason, detail)``; None if valid.

    The movie check (``unknown_movie``) needs the catalogue and runs after this.

    >>> ev = {"user_id": 1, "movie_id": 2, "rating": 4.0, "event_ts": 10**12}
    >>> rating_verdict(ev, 2 * 10**12, 0, 0) is None
    True
    >>> rating_verdict({**ev, "rating": 7.0}, 2 * 10**12, 0, 0)
    ('rating_out_of_range', 'rating 7.0 outside 0.5..5.0')
    """
    if is_user_bad(event["user_id"]):
        return "bad_user", f"user id {event['user_id']} is not positive"
    problem = rating_problem(event["rating"])
    if problem is not None:
        return "rating_out_of_range", problem
    if is_timestamp_bad(event["event_ts"], now_ms, min_ts_ms, max_future_ms):
        return "bad_timestamp", f"event_ts {event['event_ts']} outside [{min_ts_ms}, now + {max_future_ms} ms]"
    return None


def movie_event_problem(event: dict[str, Any]) -> str | None:
    """Why a decoded MovieEvent is unusable, or None."""
    if event["movie_id"] <= 0:
        return f"movie id {event['movie_id']} is not positive"
    if not event["title"].strip():
        return "empty title"
    return None
