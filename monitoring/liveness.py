"""Is the reelstream worker group alive? Its workers keep expiring heartbeat keys in Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from reelstream.redis_client import PROBE_TIMEOUT_S, async_redis_client
from schemas import redis_keys

__all__ = ["worker_heartbeats"]


def worker_heartbeats(redis_url: str) -> Callable[[], Awaitable[bool | None]]:
    """A liveness check for :class:`monitoring.lag.LagMonitor`: True while any worker heartbeat key exists.

    Returns None (unknown) when Redis cannot be reached, so the monitor falls back to group membership.
    """

    async def check() -> bool | None:
        client = async_redis_client(redis_url, timeout=PROBE_TIMEOUT_S)
        try:
            async for _key in client.scan_iter(match=redis_keys.worker("*"), count=100):
                return True
            return False
        except (RedisError, OSError):
            return None
        finally:
            await client.aclose()

    return check
