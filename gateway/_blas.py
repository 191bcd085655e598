"""Pin numpy's OpenBLAS to one thread in the gateway process.

Requests already run concurrently in the threadpool; letting each mat-vec fan
out to every core on top of that oversubscribes a small machine and multiplies
tail latency (measured: p50 19 ms -> ~6 ms at 87k items on 2 cores). This is
what ``threadpoolctl`` does, without the dependency: find the OpenBLAS library
numpy loaded and call its ``*_set_num_threads``.
"""

from __future__ import annotations

import ctypes
import pathlib
import re

__all__ = ["limit_blas_threads"]


def limit_blas_threads(n: int = 1) -> bool:
    """Set the thread count of every loaded OpenBLAS; False when none could be found (then a no-op)."""
    import numpy  # noqa: F401  (make sure numpy's BLAS is loaded)

    try:
        maps = pathlib.Path("/proc/self/maps").read_text()
    except OSError:
        return False
    done = False
    for path in sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", maps))):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done = True
                break
    return done
