"""Building events: deterministic ids, message keys, and the one producer the CLI and the gateway share.

A replayed rating's id is ``uuid5(REPLAY_NAMESPACE, "user:movie:ts_ms")``: sending
the same MovieLens row twice yields the same id, so a duplicate is recognisable
(``reelstream replay --resume`` uses it to skip what the broker already holds).
Live and API events get ``uuid4`` ids.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from reelstream.errors import DataError
from reelstream.settings import Settings
from streams.codecs import codec_for
from streams.rules import rating_problem

__all__ = [
    "REPLAY_NAMESPACE",
    "RatingProducer",
    "dead_letter_key",
    "rating_event",
    "replay_event_id",
    "user_key",
]

REPLAY_NAMESPACE = uuid.UUID("6f1d7c2e-3b8a-5c4d-9e0f-7a6b5c4d3e2f")
Source = Literal["replay", "live", "api"]


def replay_event_id(user_id: int, movie_id: int, ts_ms: int) -> str:
    """The deterministic id of a replayed rating.

    >>> replay_event_id(1, 31, 964982703000) == replay_event_id(1, 31, 964982703000)
    True
    """
    return str(uuid.uuid5(REPLAY_NAMESPACE, f"{user_id}:{movie_id}:{ts_ms}"))


def user_key(user_id: int) -> bytes:
    """The message key of a rating: the user id as ASCII digits (all of a user's events share a partition).

    >>> user_key(42)
    b'42'
    """
    return str(int(user_id)).encode()


def dead_letter_key(topic: str, partition: int, offset: int) -> bytes:
    return f"{topic}:{partition}:{offset}".encode()


def rating_event(
    user_id: int, movie_id: int, rating: float, ts_ms: int, source: Source, event_id: str | None = None
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


@dataclass
class SentRating:
    event_id: str
    partition: int
    offset: int


class RatingProducer:
    """Produces live rating events; ``reelstream rate`` and the gateway's POST both use it.

    Usage::

        async with RatingProducer(settings) as producer:
            sent = await producer.send(user_id=1, movie_id=31, rating=4.5, source="api")
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._codec = codec_for("RatingEvent")

    async def __aenter__(self) -> RatingProducer:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all")
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(
        self, user_id: int, movie_id: int, rating: float, *, source: Source = "live", ts_ms: int | None = None
    ) -> SentRating:
        """Validate, encode and produce one rating; waits for the broker's acknowledgement."""
        if self._producer is None:
            raise RuntimeError("RatingProducer used outside `async with`")
        if user_id <= 0 or movie_id <= 0:
            raise DataError(f"user and movie ids must be positive (got user {user_id}, movie {movie_id})")
        problem = rating_problem(rating)
        if problem is not None:
            raise DataError(problem)
        ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
        record = rating_event(user_id, movie_id, rating, ts_ms, source)
        meta = await self._producer.send_and_wait(
            self.settings.topic_ratings, self._codec.encode(record), key=user_key(user_id)
        )
        return SentRating(record["event_id"], meta.partition, meta.offset)
