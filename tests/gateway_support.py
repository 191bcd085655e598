"""Calling the gateway's coroutine API from synchronous tests."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.api.models import RecommendationList
from gateway.service import Gateway


def recommend(gw: Gateway, user_id: int, k: int, **kw: Any) -> RecommendationList:
    """``await gw.recommend(...)`` on a fresh event loop; the Redis client it opened is closed after."""

    async def call() -> RecommendationList:
        try:
            return await gw.recommend(user_id, k, **kw)
        finally:
            await gw.state.aclose()

    return asyncio.run(call())
