"""Sending again what a lost log may not have delivered: the producers' half of surviving a broker restart.

A memory-only broker (the local Tansu) that dies takes with it every record it acknowledged but no consumer
had read yet: the worker cannot apply them and cannot even count them, since it never saw them. The
producers can: each keeps what the broker acknowledged in the last ``settings.resend_window_s`` seconds,
and when its connection to the broker breaks (:class:`streams.broker_watch.BrokerWatch`) it sends those
records again to whatever broker comes back. The worker recognises the copies of records it had applied
(the event identity in ``rs:user:{uid}:rated``, ``streams/processor.py``) and applies the others once: the
restart loses nothing that was acknowledged within the window. On a broker that keeps its log (Apache
Kafka) a restart costs only the window's duplicates, skipped the same way.

>>> w = ResendWindow(30.0, clock=iter([0.0, 20.0, 45.0]).__next__)
>>> w.acked("a"); w.acked("b"); w.broke()  # acknowledged at 0 s and 20 s, the connection broke at 45 s
>>> w.take_due()  # older than 30 s at the break: gone with the log, not sent again
['b']
>>> w.acked("c", broke_since_sent=True); w.take_due()  # acknowledged after the break: maybe by the dead broker
['c']

A window holds whatever names a record for its owner: the gateway's producer keeps :class:`Acked` records
(topic, key, value), the replay only the index of the event in its stream (it encodes it again).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Acked", "ResendWindow"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Acked:
    """One record the broker acknowledged, as it was sent."""

    topic: str
    key: bytes | None
    value: bytes


class ResendWindow(Generic[T]):
    """What one producer had acknowledged in the last ``window_s`` seconds (0: nothing kept)."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._acked: deque[tuple[float, T]] = deque()
        self._due: list[T] = []

    def acked(self, item: T, *, broke_since_sent: bool = False) -> None:
        """The broker acknowledged this record. ``broke_since_sent``: a connection broke between the send and
        the acknowledgement, which may then have come from the broker that died: the record is due at once."""
        if self.window_s <= 0:
            return
        if broke_since_sent:
            self._due.append(item)
            return
        now = self.clock()
        self._acked.append((now, item))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._acked and self._acked[0][0] < now - self.window_s:
            self._acked.popleft()

    def broke(self) -> None:
        """The connection to the broker broke: what it acknowledged within the window is due again."""
        self._trim(self.clock())
        self._due.extend(item for _, item in self._acked)
        self._acked.clear()

    @property
    def due(self) -> int:
        return len(self._due)

    def take_due(self) -> list[T]:
        """The records to send again (the caller puts back, with :meth:`put_back`, those it could not send)."""
        out, self._due = self._due, []
        return out

    def put_back(self, items: list[T]) -> None:
        self._due[:0] = items
