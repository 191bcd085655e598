"""Building events: deterministic ids, message keys, and the contracts' verdicts before a send.

A replayed rating's id is ``uuid5(REPLAY_NAMESPACE, "user:movie:ts_ms")``: sending
the same MovieLens row twice yields the same id, so a duplicate is recognisable
(``reelstream replay --resume`` uses it to skip what the broker already holds).
Live, API and probe events get ``uuid4`` ids. Every event :class:`streams.producer.EventProducer` sends has passed
the rating contract (:func:`schemas.ratings.rating_verdict`), so the worker applies what it sends; every
MovieEvent it announces has passed the announcement contract (:func:`schemas.movies.announcement_problem`),
the worker's own rule (:func:`streams.rules.movie_event_problem`) and the Avro codec.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from reelstream.errors import DataError
from reelstream.settings import Settings
from schemas.movies import announcement_problem
from schemas.ratings import RatingLimits, RatingSource, rating_verdict, user_key
from schemas.side_features import TAG, SideEncoder, feature_name, tag_token
from streams.rules import movie_event_problem

__all__ = [
    "REPLAY_NAMESPACE",
    "MovieInCatalogue",
    "MovieRefused",
    "RatingRefused",
    "dead_letter_key",
    "judged_movie",
    "judged_rating",
    "rating_event",
    "replay_event_id",
    "tags_without_feature",
    "user_key",
]

log = logging.getLogger(__name__)

REPLAY_NAMESPACE = uuid.UUID("6f1d7c2e-3b8a-5c4d-9e0f-7a6b5c4d3e2f")


class RatingRefused(DataError):
    """A rating the contract refuses (:func:`schemas.ratings.rating_verdict`): ``reason`` and ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def replay_event_id(user_id: int, movie_id: int, ts_ms: int) -> str:
    """The deterministic id of a replayed rating.

    >>> replay_event_id(1, 31, 964982703000) == replay_event_id(1, 31, 964982703000)
    True
    """
    return str(uuid.uuid5(REPLAY_NAMESPACE, f"{user_id}:{movie_id}:{ts_ms}"))


def dead_letter_key(topic: str, partition: int, offset: int) -> bytes:
    return f"{topic}:{partition}:{offset}".encode()


def rating_event(
    user_id: int, movie_id: int, rating: float, ts_ms: int, source: RatingSource, event_id: str | None = None
) -> dict[str, Any]:
    """A RatingEvent record (dict in the Avro schema's shape)."""
    if event_id is None:
        event_id = replay_event_id(user_id, movie_id, ts_ms) if source == "replay" else str(uuid.uuid4())
    return {
        "event_id": event_id,
        "user_id": int(user_id),
        "movie_id": int(movie_id),
        "rating": float(rating),
        "event_ts": int(ts_ms),
        "source": source,
    }


def judged_rating(
    settings: Settings,
    user_id: int,
    movie_id: int,
    rating: float,
    *,
    known_movie: Callable[[int], bool],
    source: RatingSource,
    ts_ms: int | None = None,
) -> dict[str, Any]:
    """A new RatingEvent record (``ts_ms`` defaults to now) that the rating contract accepts, keyed by its user.

    Raises :class:`RatingRefused` with the contract's reason otherwise (what the worker would dead-letter).
    """
    now_ms = int(time.time() * 1000)
    record = rating_event(user_id, movie_id, rating, now_ms if ts_ms is None else ts_ms, source)
    limits = RatingLimits.from_settings(settings)
    refusal = rating_verdict(record, user_key(user_id), now_ms=now_ms, limits=limits, known_movie=known_movie)
    if refusal is not None:
        raise RatingRefused(*refusal)
    return record


class MovieRefused(DataError):
    """An announcement the contract refuses (:mod:`schemas.movies`): the ``field`` and the ``detail``."""

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        self.detail = detail
        super().__init__(f"{field}: {detail}")


class MovieInCatalogue(MovieRefused):
    """An announcement of a movie the catalogue already serves from trained rows: it would change nothing."""


def judged_movie(
    movie_id: int,
    title: str,
    genres: Sequence[str],
    year: int | None,
    tags: Sequence[str],
    *,
    in_catalogue: Callable[[int], bool],
) -> dict[str, Any]:
    """A MovieEvent record (dict in the Avro schema's shape) that the worker stores and the model can use.

    ``in_catalogue`` is the caller's catalogue of trained movies (not the announced ones: announcing one of
    those again replaces its ``rs:movie`` record). Raises :class:`MovieRefused` (or
    :class:`MovieInCatalogue`) with the field and the reason.
    """
    mid, genre_list, tag_list = int(movie_id), list(genres), list(tags)
    problem = announcement_problem(mid, title, genre_list, year, tag_list)
    if problem is not None:
        raise MovieRefused(*problem)
    record: dict[str, Any] = {"movie_id": mid, "title": title, "genres": genre_list, "year": year, "tags": tag_list}
    if in_catalogue(mid):
        raise MovieInCatalogue(
            "movie_id", f"movie {movie_id} is already in the catalogue with trained rows; an announcement "
            "would not change how it is scored",
        )  # fmt: skip
    if (event_problem := movie_event_problem(record)) is not None:  # the worker's rule: never dead-letter what we send
        raise MovieRefused("movie", event_problem)
    return record


def tags_without_feature(encoder: SideEncoder, tags: Sequence[str]) -> list[str]:
    """The tags a model has no ``tag=...`` feature for: stored with the movie, but they change none of its scores.

    >>> tags_without_feature(SideEncoder(("genre=Comedy", "tag=heist")), ["Heist ", "space"])
    ['space']
    """
    return [t for t in tags if feature_name(TAG, tag_token(t)) not in encoder.index]
