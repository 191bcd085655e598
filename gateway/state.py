"""Reading the live state the stream worker keeps in Redis (keys from :mod:`schemas.redis_keys` only).

:class:`RedisState` is the only place the gateway talks to Redis. Every
connection or timeout error becomes :class:`~gateway.errors.StateUnavailable`;
after one, calls fail fast for ``retry_s`` seconds (Rule 1 in
:mod:`gateway.decisions`) so a dead Redis costs one timeout, not one per request.

The recommendation hot path reads through the ``a``-prefixed coroutines
(``auser``, ``auser_head``, ``atrending``; redis.asyncio), so it runs on the
event loop with no threadpool hop: measured over HTTP at 4 connections, the hop
and the GIL hand-offs between the loop and the pool threads cost ~1 ms of server
CPU per request, more than scoring all of ml-latest-small. The rest (profiles,
health, admin) stays synchronous, in the threadpool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import numpy as np
import redis
import redis.asyncio as aioredis

from gateway.decisions import rule_1_redis_backing_off
from gateway.errors import StateUnavailable
from reelstream.redis_client import async_redis_client, redis_client
from schemas import redis_keys as keys
from schemas.user_record import (
    BINARY_FIELDS,
    RecordError,
    UserRecord,
    decode_rated_at,
    decode_recent_list,
    decode_user,
)

__all__ = ["RedisState", "StateReader", "UserSnapshot"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A ``ZRANGE ... WITHSCORES`` reply: (member, score) rows.
_ScoredRows = list[tuple[bytes, float]]


@dataclass(frozen=True)
class UserSnapshot:
    """One read of a user's record (:mod:`schemas.user_record`; plus, optionally, the recent list).

    ``version``, ``n``, ``mu`` and ``logvar`` come from ``record``; ``fields`` is the text of the
    non-binary fields (the profile shows them).
    """

    user_id: int
    exists: bool
    version: int = 0
    n: int = 0
    mu: np.ndarray | None = None
    logvar: np.ndarray | None = None
    fields: dict[str, str] = field(default_factory=dict)
    rated: dict[int, float] = field(default_factory=dict)
    #: movie id -> the event time (epoch ms) of its latest rating, 0 when unknown: the order of the model's
    #: co-rating component (models/sequence.py)
    rated_at: dict[int, int] = field(default_factory=dict)
    recent: list[tuple[int, float, int]] = field(default_factory=list)
    record: UserRecord | None = None


def _int(raw: Any, default: int = 0) -> int:
    try:
        return int(float(raw))
    except (TypeError, ValueError):
        return default


class StateReader(Protocol):
    """What the gateway needs from the live state (Redis here; an in-memory fake is easy to write)."""

    def user_version(self, user_id: int) -> int | None: ...
    def user(self, user_id: int, *, details: bool) -> UserSnapshot: ...
    async def auser_head(self, user_id: int) -> tuple[int | None, str | None]: ...
    async def auser(self, user_id: int) -> UserSnapshot: ...
    async def atrending(self, n: int) -> list[tuple[int, float]]: ...
    async def aclose(self) -> None: ...
    def trending(self, n: int) -> list[tuple[int, float]]: ...
    def item_prior_clock(self) -> dict[str, str]: ...
    def model_pointer(self) -> dict[str, str]: ...
    def item_prior(self) -> tuple[dict[str, str], list[tuple[int, float]]]: ...
    def item_stats(self, movie_id: int) -> dict[str, str]: ...
    def stats(self) -> dict[str, str]: ...
    def archive_status(self) -> dict[str, str]: ...
    def challenger(self) -> dict[str, str]: ...
    def experiments(self) -> dict[str, dict[str, str]]: ...
    def experiment_days(self) -> dict[str, dict[str, str]]: ...
    def ping(self) -> bool: ...
    def workers(self) -> dict[str, int]: ...
    def movie_events(self) -> list[dict[str, str]]: ...
    def user_ids(self, prefix: str, limit: int, below: int) -> list[int]: ...


#: Connections the event loop's Redis client may hold (a round trip each: ~0.1 ms on loopback).
ASYNC_MAX_CONNECTIONS = 128
#: Connections of the sync client (the threadpool routes: one per running thread, with room to spare).
SYNC_MAX_CONNECTIONS = 64
#: SCAN rounds (of COUNT 1000) one user search may take.
USER_SCAN_ROUNDS = 50


class RedisState:
    """Redis reads (hiredis parser, pooled connections, short timeouts): sync, and async for the hot path.

    The async client belongs to the event loop that first used it; a call from another loop (a new
    test client, say) gets a fresh one. ``aclose`` closes it (the app's lifespan does).
    """

    def __init__(
        self, url: str, *, timeout: float = 0.25, retry_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.client = redis_client(url, timeout=timeout, max_connections=SYNC_MAX_CONNECTIONS, retry=None)
        self.url = url
        self._timeout = timeout
        self._async: aioredis.Redis | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self.retry_s = retry_s
        self.clock = clock
        self.down_until = 0.0

    def close(self) -> None:
        self.client.close()

    async def aclose(self) -> None:
        """Close the async client if this loop owns it (one left by a closed loop is just dropped)."""
        if self._async is not None and self._async_loop is asyncio.get_running_loop():
            await self._async.aclose()
        self._async, self._async_loop = None, None

    def _check_backoff(self) -> None:
        if rule_1_redis_backing_off(self.clock(), self.down_until):
            raise StateUnavailable("Redis is unreachable (backing off)")

    def _unreachable(self, exc: BaseException) -> StateUnavailable:
        self.down_until = self.clock() + self.retry_s
        return StateUnavailable(f"Redis is unreachable: {exc}")

    def _call(self, fn: Callable[[], T]) -> T:
        self._check_backoff()
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None

    async def _acall(self, fn: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        self._check_backoff()
        loop = asyncio.get_running_loop()
        if self._async is None or self._async_loop is not loop:
            # bounded, and a request waits for a free connection (at most the timeout) rather than
            # opening one per concurrent request: each holds it for one round trip only
            client = async_redis_client(self.url, timeout=self._timeout, blocking_pool=ASYNC_MAX_CONNECTIONS,
                                        retry=None)  # fmt: skip
            self._async, self._async_loop = client, loop
        try:
            return await fn(self._async)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise self._unreachable(exc) from None

    # --- users ----------------------------------------------------------------------------
    def user_version(self, user_id: int) -> int | None:
        """The state version alone (one round trip; the cache key), None for an unknown user."""
        raw = self._call(lambda: self.client.hget(keys.user(user_id), "version"))
        return None if raw is None else _version(user_id, raw)

    def user(self, user_id: int, *, details: bool) -> UserSnapshot:
        """The state hash, and with ``details`` the rated hash and the recent list, in one pipeline."""

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(keys.user(user_id))
            pipe.hgetall(keys.user_rated(user_id))
            if details:
                pipe.lrange(keys.user_recent(user_id), 0, keys.RECENT_MAX - 1)
            return pipe.execute()

        return _snapshot(user_id, self._call(read), details)

    async def auser_head(self, user_id: int) -> tuple[int | None, str | None]:
        """(state version, None for an unknown user; the model the state belongs to), one round trip on the
        event loop: the cache key (a hot swap changes the model, not the version)."""
        raw, model = await self._acall(lambda c: c.hmget(keys.user(user_id), "version", "model_version"))
        version = None if raw is None else _version(user_id, raw)
        return version, None if model is None else keys.text(model)

    async def auser(self, user_id: int) -> UserSnapshot:
        """:meth:`user` without details (the state and rated hashes, one pipeline), on the event loop."""

        async def read(c: aioredis.Redis) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            pipe.hgetall(keys.user(user_id))
            pipe.hgetall(keys.user_rated(user_id))
            return await pipe.execute()

        return _snapshot(user_id, await self._acall(read), False)

    # --- items and system -----------------------------------------------------------------
    def trending(self, n: int) -> list[tuple[int, float]]:
        rows = self._call(lambda: self.client.zrevrange(keys.ITEMS_TRENDING, 0, n - 1, withscores=True))
        return _scored_ids(cast(_ScoredRows, rows))  # redis-py types every ZRANGE reply shape as one union

    async def atrending(self, n: int) -> list[tuple[int, float]]:
        """:meth:`trending`, on the event loop."""
        rows = await self._acall(lambda c: c.zrevrange(keys.ITEMS_TRENDING, 0, n - 1, withscores=True))
        return _scored_ids(cast(_ScoredRows, rows))  # as in trending

    def item_prior_clock(self) -> dict[str, str]:
        """``rs:items:prior:clock`` (``event_ms``, ``events``, ``half_life_s``); empty when never written."""
        return keys.text_hash(self._call(lambda: self.client.hgetall(keys.ITEMS_PRIOR_CLOCK)))

    def model_pointer(self) -> dict[str, str]:
        """``rs:model`` (``serving``, ``previous``, ``swap``...); empty when no swap ever ran."""
        return keys.text_hash(self._call(lambda: self.client.hgetall(keys.MODEL)))

    def item_prior(self) -> tuple[dict[str, str], list[tuple[int, float]]]:
        """The prior's clock and every ``rs:items:prior`` member with its score, read in one MULTI (consistent)."""

        def read() -> list[Any]:
            pipe = self.client.pipeline(transaction=True)
            pipe.hgetall(keys.ITEMS_PRIOR_CLOCK)
            pipe.zrange(keys.ITEMS_PRIOR, 0, -1, withscores=True)
            return pipe.execute()

        clock, rows = self._call(read)
        return keys.text_hash(clock), _scored_ids(rows)

    def item_stats(self, movie_id: int) -> dict[str, str]:
        return keys.text_hash(self._call(lambda: self.client.hgetall(keys.item(movie_id))))

    def stats(self) -> dict[str, str]:
        return keys.text_hash(self._call(lambda: self.client.hgetall(keys.STATS)))

    def archive_status(self) -> dict[str, str]:
        return keys.text_hash(self._call(lambda: self.client.hgetall(keys.ARCHIVE)))

    def challenger(self) -> dict[str, str]:
        """``rs:challenger`` (schemas/challenger.py): drift alarms asking for a challenger, retrain's answer."""
        return keys.text_hash(self._call(lambda: self.client.hgetall(keys.CHALLENGER)))

    def experiments(self) -> dict[str, dict[str, str]]:
        """Every arm's ``rs:exp:{arm}`` counters (the worker's attribution), with ``movies``: distinct served."""

        def read() -> dict[str, dict[str, str]]:
            arms = sorted(keys.text(a) for a in self.client.smembers(keys.EXPERIMENT_ARMS))
            pipe = self.client.pipeline(transaction=False)
            for arm in arms:
                pipe.hgetall(keys.experiment(arm))
                pipe.scard(keys.experiment(arm, "movies"))
            got = pipe.execute()
            return {arm: {**keys.text_hash(got[2 * i]), "movies": str(got[2 * i + 1])} for i, arm in enumerate(arms)}

        return self._call(read)

    def experiment_days(self) -> dict[str, dict[str, str]]:
        """Every arm's ``rs:exp:{arm}:days`` (lists and hit lists by serving day: the hit-rate watch's input)."""
        from monitoring.hit_rate import read_days

        return self._call(lambda: read_days(self.client))

    def ping(self) -> bool:
        return bool(self._call(self.client.ping))

    def workers(self) -> dict[str, int]:
        """Worker name -> last heartbeat (epoch ms) for every live ``rs:worker:*`` key."""

        def read() -> dict[str, int]:
            prefix = keys.worker("")
            names = [k for k in self.client.scan_iter(match=prefix + "*", count=1000)]
            if not names:
                return {}
            values = self.client.mget(names)
            return {k.decode()[len(prefix) :]: _int(v) for k, v in zip(names, values, strict=True) if v is not None}

        return self._call(read)

    def user_ids(self, prefix: str, limit: int, below: int) -> list[int]:
        """Up to ``limit`` user ids with state whose decimal form starts with ``prefix`` (ids < ``below``).

        A bounded SCAN (at most ``USER_SCAN_ROUNDS`` rounds), for the dashboard's user search: it may
        miss ids on a large keyspace, never blocks Redis, and returns them sorted.
        """

        def read() -> list[int]:
            head = keys.user(0)[:-1]
            found: set[int] = set()
            cursor = 0
            for _ in range(USER_SCAN_ROUNDS):
                cursor, names = self.client.scan(cursor, match=f"{head}{prefix}*", count=1000)
                for name in names:
                    tail = keys.text(name)[len(head) :]
                    if tail.isdigit() and int(tail) < below:
                        found.add(int(tail))
                if cursor == 0 or len(found) >= limit:
                    break
            return sorted(found)[:limit]

        return self._call(read)

    def movie_events(self) -> list[dict[str, str]]:
        """Every ``rs:movie:{mid}`` hash (movies announced by MovieEvents), with ``movie_id`` added."""

        def read() -> list[dict[str, str]]:
            prefix = keys.movie(0)[:-1]
            names = list(self.client.scan_iter(match=prefix + "*", count=1000))
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(name)
            out = []
            for name, raw in zip(names, pipe.execute() if names else [], strict=True):
                doc = keys.text_hash(raw)
                doc["movie_id"] = name.decode()[len(prefix) :]
                out.append(doc)
            return out

        return self._call(read)


def _scored_ids(rows: _ScoredRows) -> list[tuple[int, float]]:
    """Sorted-set rows as (movie id, score), skipping members that are not ids."""
    out = []
    for member, score in rows:
        try:
            out.append((int(member), float(score)))
        except ValueError:
            continue
    return out


def _version(user_id: int, raw: bytes | str) -> int:
    """The stored ``version`` (0 when it does not decode: the cache key then never matches a real one)."""
    return _lenient(user_id, "version", lambda: decode_user({"version": raw}).version, 0)


def _lenient(user_id: int, what: str, decode: Callable[[], T], default: T) -> T:
    """``decode()``, or ``default`` with a warning naming the problem: one corrupt key costs a user
    their personalised list (rule 3/4 serve them cold), never a 500."""
    try:
        return decode()
    except RecordError as exc:
        log.warning("user %d: %s does not decode (%s); read as absent", user_id, what, exc)
        return default


def _snapshot(user_id: int, result: list[Any], details: bool) -> UserSnapshot:
    """A user's snapshot from the replies of the state pipeline (state hash, rated hash[, recent list])."""
    state: dict[bytes, bytes] = result[0]
    rated_full: dict[int, tuple[float, int]] = _lenient(
        user_id, keys.user_rated(user_id), lambda: decode_rated_at(result[1]), {}
    )
    rated = {mid: r for mid, (r, _) in rated_full.items()}
    rated_at = {mid: ts for mid, (_, ts) in rated_full.items()}
    recent: list[tuple[int, float, int]] = (
        _lenient(user_id, keys.user_recent(user_id), lambda: decode_recent_list(result[2]), []) if details else []
    )
    if not state:
        return UserSnapshot(user_id, exists=bool(rated), rated=rated, rated_at=rated_at, recent=recent)
    record = _lenient(user_id, keys.user(user_id), lambda: decode_user(state), UserRecord())
    binary = {f.encode() for f in BINARY_FIELDS}
    fields = {k.decode(): v.decode(errors="replace") for k, v in state.items() if k not in binary}
    return UserSnapshot(
        user_id=user_id,
        exists=True,
        version=record.version,
        n=record.n,
        mu=record.mu,
        logvar=record.logvar,
        fields=fields,
        rated=rated,
        rated_at=rated_at,
        recent=recent,
        record=record,
    )
