"""Producing rating events for POST /ratings and MovieEvents for POST /movies, behind a small protocol.

:class:`KafkaEventPublisher` wraps the streams engineer's
:class:`streams.producer.EventProducer` (the one Avro encoding and key rule the
CLI uses too, which judges every event by the rating contract, schemas/ratings.py,
against the caller's ``known_movie`` catalogue). It starts lazily, bounds every
broker call by a timeout, and turns any broker failure into
:class:`~gateway.errors.BrokerUnavailable`; the next call tries a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from gateway.errors import BrokerUnavailable
from reelstream.settings import Settings
from streams.backoff import Backoff
from streams.producer import EventProducer, SentMovie, SentRating
from streams.resend import ResendWindow

__all__ = ["EventPublisher", "KafkaEventPublisher", "SentMovie", "SentRating"]

#: Starting a producer for the events due again after a broker break: first and longest wait, seconds.
REVIVE_BACKOFF_S = (0.5, 5.0)
#: Every broker call a request makes (start, send): past it the request answers 503, the broker is down.
BROKER_CALL_TIMEOUT_S = 3.0


class EventPublisher(Protocol):
    """What the routes publish through (POST /ratings, POST /movies): tests pass their own; the app a Kafka one."""

    async def send(
        self, user_id: int, movie_id: int, rating: float, ts_ms: int | None, *, known_movie: Callable[[int], bool]
    ) -> SentRating: ...
    async def announce(
        self, movie_id: int, title: str, genres: Sequence[str], year: int | None, tags: Sequence[str], *,
        in_catalogue: Callable[[int], bool],
    ) -> SentMovie: ...  # fmt: skip
    async def close(self) -> None: ...


class KafkaEventPublisher:
    """Rating events to ``settings.topic_ratings`` with ``source="api"``, and MovieEvents to ``topic_movies``."""

    def __init__(self, settings: Settings, timeout_s: float = BROKER_CALL_TIMEOUT_S) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self._inner: Any = None
        self._lock = asyncio.Lock()
        self._window: ResendWindow | None = None  #: kept across producers replaced after a timeout
        self._reviver: asyncio.Future[None] | None = None

    async def send(
        self, user_id: int, movie_id: int, rating: float, ts_ms: int | None, *, known_movie: Callable[[int], bool]
    ) -> SentRating:
        """Produce with ``source="api"``; :class:`streams.events.RatingRefused` (nothing sent) for a refused event."""
        sent: SentRating = await self._call(
            lambda inner: inner.send(user_id, movie_id, rating, source="api", ts_ms=ts_ms, known_movie=known_movie)
        )
        return sent

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
        """Produce a MovieEvent to ``settings.topic_movies``; :class:`streams.events.MovieRefused` (nothing sent)
        for a refused one."""
        sent: SentMovie = await self._call(
            lambda inner: inner.announce(movie_id, title, genres, year, tags, in_catalogue=in_catalogue)
        )
        return sent

    async def _call(self, produce: Callable[[Any], Awaitable[Any]]) -> Any:
        """``produce(inner producer)`` bounded by the timeout; any broker failure is BrokerUnavailable."""
        try:
            await self._ensure_inner()
            return await asyncio.wait_for(produce(self._inner), self.timeout_s)
        except (KafkaError, TimeoutError, OSError) as exc:
            await self.close()
            self._revive_for_resend()
            where = self.settings.kafka_bootstrap
            raise BrokerUnavailable(f"broker {where} unreachable: {type(exc).__name__}") from None

    async def _ensure_inner(self) -> None:
        """A started producer in ``self._inner`` (one at a time), sharing this gateway's resend window."""
        async with self._lock:
            if self._inner is None:
                if self._window is None:
                    self._window = ResendWindow(self.settings.resend_window_s)
                inner = EventProducer(self.settings, self._window)
                try:
                    await asyncio.wait_for(inner.__aenter__(), self.timeout_s)
                except BaseException:
                    await self._stop(inner)
                    raise
                self._inner = inner

    def _revive_for_resend(self) -> None:
        """Events acknowledged before the broker broke wait in the window: start a producer for them in the
        background (retried with capped backoff), rather than waiting for the next POST."""
        if self._window is None or not self._window.due or (self._reviver is not None and not self._reviver.done()):
            return

        async def revive() -> None:
            backoff = Backoff(*REVIVE_BACKOFF_S)
            while self._inner is None and self._window is not None and self._window.due:
                try:
                    await self._ensure_inner()  # its resend loop sends what is due
                except (KafkaError, TimeoutError, OSError):
                    await asyncio.sleep(backoff.next())

        self._reviver = asyncio.ensure_future(revive())

    async def _stop(self, inner: Any) -> None:
        with contextlib.suppress(KafkaError, TimeoutError, OSError):  # best effort: the broker is gone
            await asyncio.wait_for(inner.__aexit__(None, None, None), self.timeout_s)

    async def close(self) -> None:
        if self._reviver is not None:
            self._reviver.cancel()
            self._reviver = None
        inner, self._inner = self._inner, None
        if inner is not None:
            await self._stop(inner)
