"""Capped exponential backoff, the one retry rhythm of every loop that outlives an outage (the worker's
consumer, the producers' resend and revive loops, the archiver)."""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """``initial`` seconds, doubled after each failure, at most ``cap``; :meth:`reset` after a success.

    >>> b = Backoff(0.5, 3.0)
    >>> [b.next() for _ in range(5)]
    [0.5, 1.0, 2.0, 3.0, 3.0]
    >>> b.reset(); b.next()
    0.5
    """

    def __init__(self, initial: float, cap: float) -> None:
        self.initial, self.cap = initial, max(cap, initial)
        self._next = initial

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.initial
