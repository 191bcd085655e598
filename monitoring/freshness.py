"""End-to-end freshness probe: produce a marker rating, time until its effect is readable in Redis.

The marker is a RatingEvent with source ``probe`` from a *probe user*: user ids
``settings.probe_user_base ..`` (``probe_user_ids``) are reserved for probes and
never belong to a person (the rating contract, schemas/ratings.py, refuses any
other source there and a probe anywhere else). The worker takes it down the path
a real rating takes (decode, the contract's verdict, fold-in, one atomic Redis
commit), so the probe measures that path. Its effect is ``rs:user:{probe uid}``'s
``last_ms`` (the newest event time applied for that user) reaching the marker's
``event_ts``: a user's events share one partition and are applied in order, so
that field reaches the marker exactly when the marker (or a later probe) was committed.

Side effects, none shared: a probe changes only its probe user's own state (the
hash, rated set and recent list above) and ``rs:stats`` ``events_applied``; the
worker keeps it out of the item aggregates, popularity, trending, the item prior
and the online model. The movie is taken in turn from the model's catalogue.
Probe users rotate over ``probe_users`` ids so probes spread over partitions.

Usage::

    probe = FreshnessProbe(settings, movie_ids)
    async with probe:
        result = await probe.once()        # ProbeResult(seconds=0.08, ...) or raises ProbeLost
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from reelstream.errors import InfraError
from reelstream.redis_client import SIDE_READ_TIMEOUT_S, async_redis_client
from reelstream.settings import Settings
from schemas import redis_keys
from schemas.ratings import PROBE_SOURCE
from streams.producer import EventProducer

__all__ = ["PROBE_RATING", "FreshnessProbe", "ProbeLost", "ProbeResult"]

#: The stars every probe gives (a neutral rating).
PROBE_RATING = 3.0
#: Seconds between Redis reads while a probe waits for its effect.
POLL_S = 0.005


class ProbeLost(InfraError):
    """A probe's effect did not reach Redis within ``probe_timeout_s`` (or it could not be produced)."""


@dataclass(frozen=True)
class ProbeResult:
    """One probe: who, where, and how long each leg took."""

    at: float  #: wall time the probe was produced (epoch s)
    user_id: int
    movie_id: int
    partition: int
    offset: int
    produce_s: float  #: until the broker acknowledged the marker
    seconds: float  #: until its effect was readable in Redis (end to end)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FreshnessProbe:
    """Produces marker ratings and waits for their effect; keep one alive and call :meth:`once` periodically."""

    def __init__(
        self, settings: Settings, movie_ids: Sequence[int], clock: Callable[[], float] = time.perf_counter
    ) -> None:
        if not movie_ids:
            raise ValueError("FreshnessProbe needs at least one movie the worker knows")
        self.settings = settings
        self.movie_ids = movie_ids
        self._known = {int(m) for m in movie_ids}.__contains__
        self.clock = clock
        self._n = 0
        self._producer: Any = None
        self._redis: aioredis.Redis | None = None

    async def __aenter__(self) -> FreshnessProbe:
        self._redis = async_redis_client(self.settings.redis_url, timeout=SIDE_READ_TIMEOUT_S)
        self._producer = EventProducer(self.settings)
        await self._producer.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.__aexit__(None, None, None)
            self._producer = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def next_target(self) -> tuple[int, int]:
        """(probe user, movie) of the next probe: users and movies are taken in turn."""
        users = self.settings.probe_user_ids
        n = self._n
        self._n += 1
        return users[n % len(users)], int(self.movie_ids[n % len(self.movie_ids)])

    async def _applied_ms(self, user_id: int) -> int:
        assert self._redis is not None
        raw = await self._redis.hget(redis_keys.user(user_id), "last_ms")
        return int(raw) if raw is not None else -1

    async def once(self) -> ProbeResult:
        """Produce one marker and wait for its effect; raises :class:`ProbeLost` past the timeout."""
        if self._producer is None:
            raise RuntimeError("FreshnessProbe used outside `async with`")
        user_id, movie_id = self.next_target()
        ts_ms = int(time.time() * 1000)
        start = self.clock()
        try:
            async with asyncio.timeout(self.settings.probe_timeout_s):  # not wait_for: 3.11's can drop a cancel
                sent = await self._producer.send(
                    user_id, movie_id, PROBE_RATING, source=PROBE_SOURCE, ts_ms=ts_ms, known_movie=self._known
                )
        except (KafkaError, TimeoutError, OSError) as exc:
            raise ProbeLost(f"probe could not be produced: {type(exc).__name__}") from exc
        produced = self.clock()
        deadline = start + self.settings.probe_timeout_s
        try:
            while await self._applied_ms(user_id) < ts_ms:
                if self.clock() > deadline:
                    raise ProbeLost(
                        f"probe user {user_id} (partition {sent.partition}, offset {sent.offset}) not applied "
                        f"within {self.settings.probe_timeout_s:g} s"
                    )
                await asyncio.sleep(POLL_S)  # the polling period of the measurement
        except (RedisError, OSError) as exc:
            raise ProbeLost(f"Redis unreachable while probing: {type(exc).__name__}") from exc
        done = self.clock()
        return ProbeResult(
            at=ts_ms / 1000.0, user_id=user_id, movie_id=movie_id, partition=sent.partition, offset=sent.offset,
            produce_s=round(produced - start, 6), seconds=round(done - start, 6),
        )  # fmt: skip
