"""The rating contract: what a valid rating event is, for every producer and for the worker.

One definition, so a 202 from ``POST /ratings`` means the worker will apply the event. Its callers:
``POST /ratings`` (gateway/api/routes/ratings.py; the OpenAPI bounds of ``RatingCreate`` come from the
constants here), ``reelstream rate``, :meth:`streams.producer.EventProducer.send`, the worker's
:meth:`streams.processor.RatingProcessor.plan` (a refusal is a dead letter with the reason below) and
bootstrap's quality rules (bootstrap/quality.py vectorises the same rules, in the same order, from the
same constants and limits; a test holds the two to the same case table).

Pure: no Kafka, Faust or Redis import, so the gateway and the bootstrap import it cheaply. The clock
(``now_ms``), the limits (:class:`RatingLimits`, from ``reelstream/settings.py``) and the catalogue (a
``known_movie`` predicate) are arguments, so every verdict is deterministic.

Each rule is a small function named as a question; :func:`rating_verdict` alone sets their order and
returns the first refusal as ``(reason, detail)``, or None:

==  =======================  ============================================================================
 1  ``bad_user``             :func:`is_user_id_valid`: 1 .. ``MAX_ID`` (an integer JSON carries exactly)
 2  ``key_mismatch``         :func:`is_key_of_user`: the Kafka key is :func:`user_key` of the user (a
                             missing key too): a message keyed otherwise sits on a partition that does
                             not own the user, and applying it would break one writer per user
 3  ``reserved_user``        :func:`is_source_allowed`: ids from ``probe_user_base`` up belong to the
                             freshness probe (source ``probe``) and probes use nothing else
 4  ``rating_out_of_range``  :func:`is_rating_in_range` (``MIN_RATING`` .. ``MAX_RATING``, finite) and
                             :func:`is_half_step` (a multiple of ``RATING_STEP``)
 5  ``bad_timestamp``        :func:`is_in_time_window`: ``event_min_ts_ms`` .. now + ``event_max_future_ms``
 6  ``unknown_movie``        ``known_movie(movie_id)``: in the model, or announced by a MovieEvent
==  =======================  ============================================================================

The movie rule is last because it is the one that needs a catalogue lookup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from reelstream.settings import Settings

__all__ = [
    "LIKED_MIN_RATING",
    "MAX_ID",
    "MAX_RATING",
    "MIN_ID",
    "MIN_RATING",
    "PROBE_SOURCE",
    "RATING_STEP",
    "REASONS",
    "SOURCES",
    "RatingLimits",
    "RatingSource",
    "Refusal",
    "is_half_step",
    "is_in_time_window",
    "is_key_of_user",
    "is_rating_in_range",
    "is_reserved_user",
    "is_source_allowed",
    "is_user_id_valid",
    "rating_problem",
    "rating_verdict",
    "user_key",
]

MIN_RATING = 0.5
MAX_RATING = 5.0
#: Ratings are multiples of this (half stars).
RATING_STEP = 0.5
#: A rating at or above this is a "like": a positive for training and evaluation, a reason in explanations.
LIKED_MIN_RATING = 4.0
#: User and movie ids: positive, and at most 2**53 so a JSON client carries them exactly.
MIN_ID = 1
MAX_ID = 2**53

#: Who produced an event: the symbols of ``schemas/rating_event.avsc``'s ``RatingSource`` enum, in order.
SOURCES: tuple[str, ...] = ("replay", "live", "api", "probe")
RatingSource = Literal["replay", "live", "api", "probe"]
#: The freshness probe's source: its events update only the probe user's own state (docs/events.md).
PROBE_SOURCE = "probe"

#: The refusal reasons in verdict order (also the dead-letter ``reason`` and the bootstrap quarantine reason).
REASONS: tuple[str, ...] = (
    "bad_user", "key_mismatch", "reserved_user", "rating_out_of_range", "bad_timestamp", "unknown_movie",
)  # fmt: skip


class Refusal(NamedTuple):
    """Why an event is refused: ``reason`` (one of :data:`REASONS`) and a human-readable ``detail``."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class RatingLimits:
    """The settings the contract depends on (``reelstream/settings.py`` holds their values)."""

    min_ts_ms: int  #: ``event_min_ts_ms``
    max_future_ms: int  #: ``event_max_future_ms``
    probe_user_base: int  #: ``probe_user_base``

    @classmethod
    def from_settings(cls, settings: Settings) -> RatingLimits:
        return cls(settings.event_min_ts_ms, settings.event_max_future_ms, settings.probe_user_base)


def user_key(user_id: int) -> bytes:
    """The Kafka key of a user's ratings: the id as ASCII digits (a user's events share one partition).

    >>> user_key(42)
    b'42'
    """
    return str(int(user_id)).encode()


# Rule 1
def is_user_id_valid(user_id: int) -> bool:
    return MIN_ID <= user_id <= MAX_ID


# Rule 2
def is_key_of_user(key: bytes | None, user_id: int) -> bool:
    return key is not None and bytes(key) == user_key(user_id)


# Rule 3
def is_reserved_user(user_id: int, probe_user_base: int) -> bool:
    """Ids from ``probe_user_base`` up belong to the freshness probe, never to a person."""
    return user_id >= probe_user_base


def is_source_allowed(source: str, user_id: int, probe_user_base: int) -> bool:
    """Probe events come from reserved ids only, and reserved ids send probe events only."""
    return (source == PROBE_SOURCE) == is_reserved_user(user_id, probe_user_base)


# Rule 4
def is_rating_in_range(rating: float) -> bool:
    return math.isfinite(rating) and MIN_RATING <= rating <= MAX_RATING


def is_half_step(rating: float) -> bool:
    return math.isfinite(rating) and (rating / RATING_STEP).is_integer()


def rating_problem(rating: float) -> str | None:
    """Why ``rating`` is not a valid star rating (rule 4), or None.

    >>> rating_problem(4.5), rating_problem(0.0), rating_problem(3.2)
    (None, 'rating 0.0 outside 0.5..5.0', 'rating 3.2 is not a half step')
    """
    if not is_rating_in_range(rating):
        return f"rating {rating} outside {MIN_RATING}..{MAX_RATING}"
    if not is_half_step(rating):
        return f"rating {rating} is not a half step"
    return None


# Rule 5
def is_in_time_window(ts_ms: int, now_ms: int, limits: RatingLimits) -> bool:
    return limits.min_ts_ms <= ts_ms <= now_ms + limits.max_future_ms


def rating_verdict(
    event: Mapping[str, Any],
    key: bytes | None,
    *,
    now_ms: int,
    limits: RatingLimits,
    known_movie: Callable[[int], bool],
) -> Refusal | None:
    """The first rule a decoded RatingEvent (a dict in the Avro schema's shape) breaks; None: it is valid.

    ``key`` is the Kafka message key the event travels (or would travel) under; ``known_movie`` says
    whether a movie id is in the catalogue (the model's movies plus the announced ones).

    >>> limits = RatingLimits(min_ts_ms=0, max_future_ms=0, probe_user_base=1000)
    >>> ev = {"user_id": 1, "movie_id": 2, "rating": 4.0, "event_ts": 10**12, "source": "api"}
    >>> rating_verdict(ev, b"1", now_ms=2 * 10**12, limits=limits, known_movie={2}.__contains__) is None
    True
    >>> rating_verdict({**ev, "rating": 7.0}, b"1", now_ms=2 * 10**12, limits=limits, known_movie={2}.__contains__)
    Refusal(reason='rating_out_of_range', detail='rating 7.0 outside 0.5..5.0')
    """
    uid = event["user_id"]
    if not is_user_id_valid(uid):
        return Refusal("bad_user", f"user id {uid} outside {MIN_ID}..{MAX_ID}")
    if not is_key_of_user(key, uid):
        got = "no message key" if key is None else f"message key {bytes(key)!r}"
        return Refusal("key_mismatch", f"{got} for user {uid} (expected {user_key(uid)!r})")
    source = event.get("source", "live")
    if not is_source_allowed(source, uid, limits.probe_user_base):
        if source == PROBE_SOURCE:
            why = f"source probe needs a probe user id (>= {limits.probe_user_base}), got {uid}"
        else:
            why = f"user id {uid} is reserved for freshness probes (>= {limits.probe_user_base}), source {source}"
        return Refusal("reserved_user", why)
    problem = rating_problem(event["rating"])
    if problem is not None:
        return Refusal("rating_out_of_range", problem)
    ts = event["event_ts"]
    if not is_in_time_window(ts, now_ms, limits):
        return Refusal(
            "bad_timestamp", f"event_ts {ts} outside [{limits.min_ts_ms}, now {now_ms} + {limits.max_future_ms} ms]"
        )
    mid = event["movie_id"]
    if not known_movie(mid):
        return Refusal("unknown_movie", f"movie {mid} is not in the catalogue")
    return None
