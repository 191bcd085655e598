"""Every served list, recorded as an ImpressionEvent (schemas/impression_event.avsc), off the request path.

:meth:`ImpressionRecorder.record` only appends to a bounded queue: no I/O, no await, nothing that can raise,
so recording never slows or fails a request. One background task (:meth:`ImpressionRecorder.run`, started
with the app) hands the queue, ``gateway_impression_batch`` lists at a time, to an aiokafka producer every
``FLUSH_INTERVAL_S`` (or as soon as a whole batch waits), without waiting for each acknowledgement; the
acknowledgements are counted as they arrive.

Impressions are best effort, and every loss is counted, never retried (``GET /stats`` ``impressions``, and
``reelstream_gateway_impressions_total{outcome}``):

- ``queue_full``: the list found ``gateway_impression_queue`` lists waiting (the broker slow or down for long);
- ``broker_down``: the producer could not start, a send failed, or a sent list was not acknowledged; while
  the producer is down the lists taken meanwhile are dropped at once, and a fresh start is tried after a
  capped backoff (:class:`streams.backoff.Backoff`);
- ``shutdown``: lists still queued or unacknowledged when the gateway stopped.

``recorded`` counts lists accepted into the queue; ``sent`` those the broker acknowledged. So
``recorded = sent + broker_down + shutdown + (still queued or in flight)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from gateway.api.models import RecommendationList
from reelstream.settings import Settings
from schemas.wire import codec_for
from streams.backoff import Backoff
from streams.events import user_key

__all__ = ["OUTCOMES", "ImpressionRecorder", "impression_event"]

log = logging.getLogger(__name__)

#: Every count the recorder keeps (module docstring).
OUTCOMES = ("recorded", "sent", "queue_full", "broker_down", "shutdown")
#: Waits between producer starts while the broker is down: first and longest, seconds.
START_BACKOFF_S = (0.5, 10.0)
#: The producer's budget for one request to the broker: a down broker fails sends within this, not 40 s.
REQUEST_TIMEOUT_MS = 5_000
#: Closing flushes what is in flight for at most this long (the rest counts as ``shutdown``).
CLOSE_TIMEOUT_S = 3.0
#: The background task hands the queue to the producer every this many seconds, or as soon as a whole batch
#: waits: few, large produce requests (one per request would cost the gateway ~0.15 ms of CPU each, measured).
FLUSH_INTERVAL_S = 0.5

Clock = Literal["wall", "event"]


def impression_event(
    result: RecommendationList, served_ms: int, clock: Clock, novelty: float | None = None
) -> dict[str, Any]:
    """The ImpressionEvent record of one served list (a dict in the Avro schema's shape); ``novelty``:
    :meth:`gateway.catalog.Catalog.novelty` of the list.

    >>> from gateway.api.models import RecommendedMovie
    >>> item = RecommendedMovie(movie_id=7, title="t", genres=[], year=None, score=1.0, reasons=[])
    >>> r = RecommendationList(user_id=3, k=1, items=[item], source="trending", degraded=False, cached=True,
    ...     segment="new", variant="control", rule_set="default", rules_version="r1", state_version=0,
    ...     model_version="m1")
    >>> e = impression_event(r, 1000, "wall")
    >>> e["movie_ids"], e["source"], e["cached"], e["served_ms"], e["clock"], len(e["impression_id"])
    ([7], 'trending', True, 1000, 'wall', 32)
    """
    return {
        "impression_id": uuid.uuid4().hex, "user_id": result.user_id, "movie_ids": [i.movie_id for i in result.items],
        "variant": result.variant, "segment": result.segment, "model_version": result.model_version,
        "rules_version": result.rules_version, "source": str(result.source), "cached": result.cached,
        "degraded": result.degraded, "exploration": result.exploration, "served_ms": served_ms, "clock": clock,
        "novelty": novelty,
    }  # fmt: skip


class ImpressionRecorder:
    """The bounded queue and the background producer of ImpressionEvents (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        on_count: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.topic = settings.topic_impressions
        self.max_queued = settings.gateway_impression_queue
        self.batch = settings.gateway_impression_batch
        self.counts: Counter[str] = Counter({name: 0 for name in OUTCOMES})
        self.queue: deque[dict[str, Any]] = deque()
        self._on_count = on_count
        self._clock = clock
        self._encode = codec_for("ImpressionEvent").encode
        self._wake: asyncio.Event | None = None
        self._producer: AIOKafkaProducer | None = None
        self._backoff = Backoff(*START_BACKOFF_S)
        self._retry_at = 0.0
        self._in_flight = 0
        self._down_logged = False

    # --- the request path -----------------------------------------------------------
    def record(self, result: RecommendationList, served_ms: int, clock: Clock, novelty: float | None = None) -> None:
        """Queue one served list (O(1), never raises); dropped and counted when the queue is full."""
        if len(self.queue) >= self.max_queued:
            self._count("queue_full")
            return
        self.queue.append(impression_event(result, served_ms, clock, novelty))
        self._count("recorded")
        if self._wake is not None and len(self.queue) >= self.batch:
            self._wake.set()

    # --- the background task ----------------------------------------------------------
    async def run(self) -> None:
        """Produce what is queued until cancelled; no error ends it."""
        self._wake = asyncio.Event()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            self._wake.clear()
            await self._drain()

    async def _drain(self) -> None:
        while self.queue:
            await self._send([self.queue.popleft() for _ in range(min(self.batch, len(self.queue)))])

    async def _send(self, records: list[dict[str, Any]]) -> None:
        producer = await self._started()
        if producer is None:
            self._count("broker_down", len(records))
            return
        for i, record in enumerate(records):
            try:
                fut = await producer.send(self.topic, self._encode(record), key=user_key(record["user_id"]))
            except (KafkaError, OSError) as exc:  # the producer gave up on its buffer: the rest goes too
                self._count("broker_down", len(records) - i)
                await self._lost_producer(exc)
                return
            self._in_flight += 1
            fut.add_done_callback(self._acked)

    def _acked(self, fut: asyncio.Future[Any]) -> None:
        self._in_flight -= 1
        if fut.cancelled():
            self._count("shutdown")
        elif fut.exception() is not None:
            self._count("broker_down")
        else:
            self._count("sent")
            self._backoff.reset()

    async def _started(self) -> AIOKafkaProducer | None:
        """The producer, started if need be; None while the broker is down (and its backoff runs)."""
        if self._producer is not None:
            return self._producer
        if self._clock() < self._retry_at:
            return None
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all", linger_ms=100,
                                    request_timeout_ms=REQUEST_TIMEOUT_MS)  # fmt: skip
        try:
            await asyncio.wait_for(producer.start(), REQUEST_TIMEOUT_MS / 1000)
        except (KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            self._retry_at = self._clock() + self._backoff.next()
            if not self._down_logged:
                log.warning("impressions: broker at %s unavailable (%s); lists are dropped and counted until it "
                            "answers", self.settings.kafka_bootstrap, exc)  # fmt: skip
                self._down_logged = True
            return None
        if self._down_logged:
            log.info("impressions: broker answers again; recording resumed")
            self._down_logged = False
        self._producer = producer
        return producer

    async def _lost_producer(self, exc: BaseException) -> None:
        producer, self._producer = self._producer, None
        self._retry_at = self._clock() + self._backoff.next()
        log.warning("impressions: send failed (%s); dropping and counting until the broker answers", exc)
        self._down_logged = True
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)

    async def close(self) -> None:
        """Hand the queue to the producer and flush it (within ``CLOSE_TIMEOUT_S`` each), then count whatever is
        left as ``shutdown``. Call it after cancelling :meth:`run`."""
        if self.queue and self._producer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(), CLOSE_TIMEOUT_S)
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.flush(), CLOSE_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), CLOSE_TIMEOUT_S)
        if self.queue:
            self._count("shutdown", len(self.queue))
            self.queue.clear()

    def snapshot(self) -> dict[str, int]:
        """The counts, plus ``queued`` (waiting) and ``in_flight`` (sent, not acknowledged yet)."""
        return {**self.counts, "queued": len(self.queue), "in_flight": self._in_flight}

    def _count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n
        if self._on_count is not None:
            self._on_count(outcome, n)
