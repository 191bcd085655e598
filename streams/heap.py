"""The worker's C heap: glibc malloc settings that keep its resident memory near what it holds.

Why: the worker's Python objects live in pymalloc's arenas, but every large buffer (a poll's records, the
~1 MB msgpack argument of each commit, numpy arrays) comes from glibc malloc. With the commit in its own
thread (``streams/apply.py``) glibc gives that thread its own arena, and its dynamic mmap threshold moves
megabyte buffers from ``mmap`` (returned on free) onto the heap, where freed space stays resident. Over the
6.4 M-event ML-32M replay that grew the worker's peak RSS well past what it holds (``docs/scale.md``).

So: at most two arenas, a fixed mmap threshold (buffers above it are mapped and unmapped), and
:func:`trim` hands freed heap pages back (called every few heartbeats). Elsewhere than glibc every call
here is a no-op that returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

__all__ = ["trim", "tune"]

#: mallopt parameters (glibc malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: Buffers at least this large are mapped on their own and unmapped when freed.
MMAP_THRESHOLD = 256 * 1024
ARENA_MAX = 2


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist only in glibc
    except (OSError, AttributeError):
        return None
    return libc


def tune(arena_max: int = ARENA_MAX, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Apply the settings (before the process starts its threads); True when glibc took both."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arena_max)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))


def trim() -> bool:
    """Return the heap's free pages to the system; True when some were."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
