"""Is the reelstream worker group alive? Its workers keep expiring heartbeat keys in Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from schemas import redis_keys

__all__ = ["worker_heartbeats"]


def worker_heartbeats(redis_url: str) -> Callable[[], Awaitable[bool | None]]:
    """A liveness check for :class:`monitoring.lag.LagMonitor`: True while any worker heartbeat key exists.

    Returns None (unknown) when Redis cannot be reached, so the monitor falls back to group membership.
    """

    async def check() -> bool | None:
        client = aioredis.Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            async for _key in client.scan_iter(match=redis_keys.worker("*"), count=100):
                return True
            return False
        except (RedisError, OSError):
            return None
        finally:
            await client.aclose()

    return check
