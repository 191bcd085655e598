"""Building events: deterministic ids, message keys, and the one producer the CLI and the gateway share.

A replayed rating's id is ``uuid5(REPLAY_NAMESPACE, "user:movie:ts_ms")``: sending
the same MovieLens row twice yields the same id, so a duplicate is recognisable
(``reelstream replay --resume`` uses it to skip what the broker already holds).
Live, API and probe events get ``uuid4`` ids. Every event :class:`RatingProducer` sends has passed
the rating contract (:func:`schemas.ratings.rating_verdict`), so the worker applies what it sends; every
MovieEvent it announces has passed the announcement contract (:func:`schemas.movies.announcement_problem`),
the worker's own rule (:func:`streams.rules.movie_event_problem`) and the Avro codec.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from reelstream.errors import DataError
from reelstream.settings import Settings
from schemas.movies import announcement_problem, movie_key
from schemas.ratings import RatingLimits, RatingSource, rating_verdict, user_key
from schemas.side_features import TAG, SideEncoder, feature_name, tag_token
from schemas.wire import codec_for
from streams.broker_watch import BrokerWatch
from streams.resend import Acked, ResendWindow
from streams.rules import movie_event_problem

__all__ = [
    "REPLAY_NAMESPACE",
    "MovieInCatalogue",
    "MovieRefused",
    "RatingProducer",
    "RatingRefused",
    "SentMovie",
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
    record = {"movie_id": int(movie_id), "title": title, "genres": list(genres), "year": year, "tags": list(tags)}
    problem = announcement_problem(record["movie_id"], title, record["genres"], year, record["tags"])
    if problem is not None:
        raise MovieRefused(*problem)
    if in_catalogue(record["movie_id"]):
        raise MovieInCatalogue(
            "movie_id", f"movie {movie_id} is already in the catalogue with trained rows; an announcement "
            "would not change how it is scored",
        )  # fmt: skip
    if (problem := movie_event_problem(record)) is not None:  # the worker's rule: never dead-letter what we send
        raise MovieRefused("movie", problem)
    return record


def tags_without_feature(encoder: SideEncoder, tags: Sequence[str]) -> list[str]:
    """The tags a model has no ``tag=...`` feature for: stored with the movie, but they change none of its scores.

    >>> tags_without_feature(SideEncoder(("genre=Comedy", "tag=heist")), ["Heist ", "space"])
    ['space']
    """
    return [t for t in tags if feature_name(TAG, tag_token(t)) not in encoder.index]


@dataclass
class SentRating:
    event_id: str
    partition: int
    offset: int


@dataclass
class SentMovie:
    movie_id: int
    partition: int
    offset: int


class RatingProducer:
    """Produces live rating events and movie announcements; ``reelstream rate``, ``reelstream movie add``
    and the gateway's POSTs use it.

    What the broker acknowledged in the last ``settings.resend_window_s`` is sent again in the background
    when the connection to the broker breaks (:mod:`streams.resend`): a restarted memory-only broker loses
    nothing this producer was told it holds. ``resent`` counts those sends.

    Usage::

        async with RatingProducer(settings) as producer:
            sent = await producer.send(1, 31, 4.5, source="api", known_movie=catalogue.__contains__)
    """

    def __init__(self, settings: Settings, window: ResendWindow[Acked] | None = None) -> None:
        """``window``: one that outlives this producer (the gateway replaces a producer that timed out)."""
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._codec = codec_for("RatingEvent")
        self._movie_codec = codec_for("MovieEvent")
        self.window: ResendWindow[Acked] = window if window is not None else ResendWindow(settings.resend_window_s)
        self.resent = 0
        self._due = asyncio.Event()
        self._resender: asyncio.Task[None] | None = None
        self._watch: BrokerWatch | None = None

    async def __aenter__(self) -> RatingProducer:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all")
        self._watch = watch = BrokerWatch(self._producer.client)
        watch.on_break += [self.window.broke, self._due.set]
        try:
            await self._producer.start()
        except BaseException:  # no broker: close what start() opened, so nothing is left unclosed
            await self._producer.stop()
            self._producer = None
            raise
        if self.window.due:
            self._due.set()  # left by a producer that broke before it could send them
        self._resender = asyncio.ensure_future(self._resend_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._resender is not None:
            self._resender.cancel()
            self._resender = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _resend_loop(self) -> None:
        """After each break: send the window's records again, retrying with capped backoff until all went.
        Cancelled (the producer stops), what is not sent yet goes back to the window for the next one."""
        delay = 0.2
        while True:
            await self._due.wait()
            self._due.clear()
            due = self.window.take_due()
            total = len(due)
            try:
                while due:
                    assert self._producer is not None
                    try:
                        await self._producer.send_and_wait(due[0].topic, due[0].value, key=due[0].key)
                    except (KafkaError, OSError) as exc:
                        log.warning("sending again after a broker restart failed (%s); retrying", exc)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
                        continue
                    self.window.acked(due.pop(0))
                    self.resent += 1
                    delay = 0.2
            except asyncio.CancelledError:
                self.window.put_back(due)
                raise
            log.warning("sent %d acknowledged events again after a broken broker connection", total)

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
        meta = await self._produce(self.settings.topic_ratings, user_key(user_id), self._codec.encode(record))
        return SentRating(record["event_id"], meta.partition, meta.offset)

    async def announce(
        self,
        movie_id: int,
        title: str,
        genres: Sequence[str],
        year: int | None,
        tags: Sequence[str],
        *,
        in_catalogue: Callable[[int], bool],
    ) -> SentMovie:
        """Judge (:func:`judged_movie`), encode and produce one MovieEvent keyed by the movie id; waits for the
        broker's acknowledgement. Raises :class:`MovieRefused` (nothing is produced) for a refused one."""
        if self._producer is None:
            raise RuntimeError("RatingProducer used outside `async with`")
        record = judged_movie(movie_id, title, genres, year, tags, in_catalogue=in_catalogue)
        value = self._movie_codec.encode(record)
        meta = await self._produce(self.settings.topic_movies, movie_key(record["movie_id"]), value)
        return SentMovie(record["movie_id"], meta.partition, meta.offset)

    async def _produce(self, topic: str, key: bytes, value: bytes) -> Any:
        """Send and wait for the acknowledgement; the record joins the resend window (aiokafka RecordMetadata)."""
        assert self._producer is not None
        breaks = self._watch.breaks if self._watch is not None else 0
        meta = await self._producer.send_and_wait(topic, value, key=key)
        broke = self._watch is not None and self._watch.breaks != breaks
        self.window.acked(Acked(topic, key, value), broke_since_sent=broke)
        if broke:
            self._due.set()
        return meta
