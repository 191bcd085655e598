"""The one producer of reelstream events: ``reelstream rate``, ``reelstream movie add``, the gateway's POSTs
and the freshness probe send through :class:`EventProducer` (acks=all, keyed by user or movie, resent after a
broken connection: :mod:`streams.resend`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from reelstream.settings import Settings
from schemas.movies import movie_key
from schemas.ratings import RatingSource, user_key
from schemas.wire import codec_for
from streams.backoff import Backoff
from streams.broker_watch import BrokerWatch
from streams.events import judged_movie, judged_rating
from streams.resend import Acked, ResendWindow

__all__ = ["EventProducer", "SentMovie", "SentRating"]

#: The resend loop's retry rhythm after a broker restart: first and longest wait, seconds.
RESEND_BACKOFF_S = (0.2, 5.0)

log = logging.getLogger(__name__)


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


class EventProducer:
    """Produces live rating events and movie announcements; ``reelstream rate``, ``reelstream movie add``
    and the gateway's POSTs use it.

    What the broker acknowledged in the last ``settings.resend_window_s`` is sent again in the background
    when the connection to the broker breaks (:mod:`streams.resend`): a restarted memory-only broker loses
    nothing this producer was told it holds. ``resent`` counts those sends.

    Usage::

        async with EventProducer(settings) as producer:
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

    async def __aenter__(self) -> EventProducer:
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
        backoff = Backoff(*RESEND_BACKOFF_S)
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
                        await asyncio.sleep(backoff.next())
                        continue
                    self.window.acked(due.pop(0))
                    self.resent += 1
                    backoff.reset()
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
            raise RuntimeError("EventProducer used outside `async with`")
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
            raise RuntimeError("EventProducer used outside `async with`")
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
