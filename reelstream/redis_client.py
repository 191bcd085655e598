"""The one factory for every Redis client of the code base, sync and async: each call has a timeout.

A client made with redis-py's defaults waits forever on a Redis that stopped answering (no socket
timeout), which hangs a worker batch, a heartbeat or a gateway request instead of failing it. Every
client here gets ``settings.redis_timeout_s`` (or the caller's shorter budget, e.g. the gateway's
``gateway_redis_timeout`` on the request path) as both socket and connect timeout, so a call either
answers or raises :class:`redis.exceptions.TimeoutError` / ``ConnectionError``, which callers catch,
log once per outage, count and retry.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from reelstream.settings import get_settings

__all__ = ["PROBE_TIMEOUT_S", "SIDE_READ_TIMEOUT_S", "async_redis_client", "redis_client"]

#: A status probe's Redis budget (/health, lag's reset records, liveness): it answers within a scrape or
#: reports Redis down, never holding the page.
PROBE_TIMEOUT_S = 1.0
#: A short read beside the main job (the freshness probe's state reads, ``rate``'s announced-movie check):
#: failing it costs one sample or one lookup, not the job.
SIDE_READ_TIMEOUT_S = 2.0


def _options(timeout: float | None, options: dict[str, Any]) -> dict[str, Any]:
    t = get_settings().redis_timeout_s if timeout is None else timeout
    return {"socket_timeout": t, "socket_connect_timeout": t, **options}


def redis_client(url: str | None = None, *, timeout: float | None = None, **options: Any) -> redis.Redis:
    """A sync client for ``url`` (default ``settings.redis_url``) with a socket and connect timeout."""
    return redis.Redis.from_url(url or get_settings().redis_url, **_options(timeout, options))


def async_redis_client(
    url: str | None = None, *, timeout: float | None = None, blocking_pool: int | None = None, **options: Any
) -> aioredis.Redis:
    """A ``redis.asyncio`` client with the same timeouts; ``blocking_pool=N``: at most N connections, and a
    caller waits (up to the timeout) for a free one instead of opening another."""
    opts = _options(timeout, options)
    if blocking_pool is None:
        return aioredis.Redis.from_url(url or get_settings().redis_url, **opts)
    pool = aioredis.BlockingConnectionPool.from_url(
        url or get_settings().redis_url, max_connections=blocking_pool, timeout=opts["socket_timeout"], **opts
    )
    return aioredis.Redis.from_pool(pool)
