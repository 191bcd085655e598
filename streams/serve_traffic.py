"""Replay as a live prequential walk: ask the gateway for a user's list just before producing their event.

``reelstream replay --serve-rate P`` picks a fraction ``P`` of the STREAM's users (by a hash of the user id,
so the same users on every run and resume) and, before each of their events is produced, requests
``GET /recommendations/{user}?served_at_ms={event time}``: the gateway serves the list from the state it
has then and records it as an ImpressionEvent stamped with the event's time (gateway/impressions.py), so a
replay of MovieLens exercises the whole serving path and leaves impressions to attribute the replayed ratings
to.

A request that fails (gateway down, timeout, an error answer) is counted, never retried, and the event is
produced all the same: the serving traffic never holds the stream back or loses an event.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

__all__ = ["LIST_LENGTH", "REQUEST_TIMEOUT_S", "ServeHook", "ServeSummary", "ServeTraffic", "is_served"]

#: The list length requested (the k every HR@k up to 20 is read from).
LIST_LENGTH = 20
#: One list request's budget; past it the request counts as failed and the event goes on.
REQUEST_TIMEOUT_S = 2.0
_HASH_SPACE = 2**32


def is_served(user_id: int, rate: float) -> bool:
    """Whether ``user_id`` is among the fraction ``rate`` of users served (a stable hash, not a draw).

    >>> is_served(7, 1.0), is_served(7, 0.0)
    (True, False)
    >>> sum(is_served(u, 0.25) for u in range(1, 10_001))  # about a quarter
    2499
    """
    return zlib.crc32(b"serve:%d" % user_id) < rate * _HASH_SPACE


@dataclass
class ServeSummary:
    requested: int = 0  #: lists asked for
    served: int = 0  #: answered 200
    failed: int = 0  #: not answered, or an error status
    errors: dict[str, int] = field(default_factory=dict)  #: failure reason -> count


class ServeHook(Protocol):
    """What the replay calls around each event it produces (:func:`streams.replay.replay`); never raises."""

    async def before(self, user_id: int, movie_id: int, rating: float, event_ms: int) -> None:
        """Awaited before the event is produced."""

    def sent(self, user_id: int, ack: asyncio.Future[Any]) -> None:
        """The event was handed to the producer; ``ack`` resolves to its RecordMetadata."""


class ServeTraffic:
    """The list requests of ``replay --serve-rate`` (module docstring); use as an async context manager."""

    def __init__(self, base_url: str, rate: float, k: int = LIST_LENGTH, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.base_url, self.rate, self.k, self.timeout_s = base_url.rstrip("/"), rate, k, timeout_s
        self.summary = ServeSummary()
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> ServeTraffic:
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def before(self, user_id: int, movie_id: int, rating: float, event_ms: int) -> None:
        """Ask for ``user_id``'s list at ``event_ms`` if the user is served; never raises."""
        if is_served(user_id, self.rate):
            await self.request(user_id, event_ms)

    def sent(self, user_id: int, ack: asyncio.Future[Any]) -> None:
        """Nothing to do: the serving traffic does not wait for the events it precedes."""

    async def request(self, user_id: int, event_ms: int) -> dict[str, Any] | None:
        """``GET /recommendations/{user_id}`` at ``event_ms``: the answer's body, or None (counted) on a failure."""
        assert self._client is not None, "use ServeTraffic as an async context manager"
        s = self.summary
        s.requested += 1
        try:
            resp = await self._client.get(f"/recommendations/{user_id}", params={"k": self.k, "served_at_ms": event_ms})
        except httpx.HTTPError as exc:
            self._failed(type(exc).__name__)
            return None
        if resp.status_code != 200:
            self._failed(f"HTTP {resp.status_code}")
            return None
        try:
            body: dict[str, Any] = resp.json()
        except ValueError:
            self._failed("not JSON")
            return None
        s.served += 1
        return body

    def _failed(self, reason: str) -> None:
        self.summary.failed += 1
        self.summary.errors[reason] = self.summary.errors.get(reason, 0) + 1
