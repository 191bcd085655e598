"""A small thread-safe LRU for rendered responses, with hit/miss counters.

Keys carry everything a response depends on: (user, state version, rules version,
catalogue version, item-prior generation, parameters). A new rating bumps the state
version, a rules change the rules version and a moved item prior its generation,
so a stale entry is never looked up again; it just ages out. Entries may carry an
expiry (cold-start lists follow trending).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["ResponseCache"]


class ResponseCache:
    """LRU of at most ``capacity`` entries.

    >>> c = ResponseCache(2)
    >>> c.put("a", 1); c.put("b", 2); c.get("a"); c.put("c", 3)
    1
    >>> c.get("b") is None, c.hits, c.misses
    (True, 1, 1)
    """

    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.clock = clock
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None or entry[0] < self.clock():
                if entry is not None:
                    del self._data[key]
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, value: Any, ttl_s: float | None = None) -> None:
        if self.capacity <= 0:
            return
        expires = float("inf") if ttl_s is None else self.clock() + ttl_s
        with self._lock:
            self._data[key] = (expires, value)
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
