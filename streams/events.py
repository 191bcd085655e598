"""Building events: deterministic ids, message keys, and the one producer the CLI and the gateway share.

A replayed rating's id is ``uuid5(REPLAY_NAMESPACE, "user:movie:ts_ms")``: sending
the same MovieLens row twice yields the same id, so a duplicate is recognisable
(``reelstream replay --resume`` uses it to skip what the broker already holds).
Live, API and probe events get ``uuid4`` ids. Every event :class:`RatingProducer` sends has passed
the rating contract (:func:`schemas.ratings.rating_verdict`), so the worker applies what it sends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from reelstream.errors import DataError
from reelstream.settings import Settings
from schemas.ratings import RatingLimits, RatingSource, rating_verdict, user_key
from streams.codecs import codec_for

__all__ = [
    "REPLAY_NAMESPACE",
    "RatingProducer",
    "RatingRefused",
    "dead_letter_key",
    "judged_rating",
    "rating_event",
    "replay_event_id",
    "user_key",
]

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


@dataclass
class SentRating:
    event_id: str
    partition: int
    offset: int


class RatingProducer:
    """Produces live rating events; ``reelstream rate`` and the gateway's POST both use it.

    Usage::

        async with RatingProducer(settings) as producer:
            sent = await producer.send(1, 31, 4.5, source="api", known_movie=catalogue.__contains__)
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
        self,
        user_id: int,
        movie_id: int,
        rating: float,
        *,
        known_movie: Callable[[int], bool],
        source: RatingSource = "live",
        ts_ms: int | None = None,
    ) -> SentRating:
        """Judge by the rating contract, encode and produce one rating; waits for the broker's acknowledgement.

        ``known_movie`` is the caller's catalogue (the model's movies plus the announced ones): the
        contract's movie rule needs it. Raises :class:`RatingRefused` (nothing is produced) for an
        event the worker would refuse.
        """
        if self._producer is None:
            raise RuntimeError("RatingProducer used outside `async with`")
        record = judged_rating(self.settings, user_id, movie_id, rating, known_movie=known_movie, source=source,
                               ts_ms=ts_ms)  # fmt: skip
        key = user_key(user_id)
        meta = await self._producer.send_and_wait(self.settings.topic_ratings, self._codec.encode(record), key=key)
        return SentRating(record["event_id"], meta.partition, meta.offset)
