"""The gateway's application shutdown: each step bounded in time, and named when it overruns.

Why: a step that never returns (a client whose close waits on a broker that does not answer, a
background task slow to take its cancellation) keeps the process in uvicorn's "Waiting for
application shutdown", and nobody can tell which step it was. Here each step runs as its own task
with a deadline; one that overruns is cancelled, logged by name and abandoned, and the steps after it
still run. ``asyncio.wait_for`` alone is not enough for this: it waits for the inner coroutine to
finish cancelling. (A coroutine that swallows every cancellation still holds up the event loop's own
exit; the process supervisor, ``reelstream/shell/gateway_processes.py``, kills such a process.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["RECANCEL_S", "STEP_S", "Shutdown"]

log = logging.getLogger(__name__)

STEP_S = 3.0
"""The most one shutdown step may take (the background tasks together count as one step)."""

RECANCEL_S = 0.5
"""How long a cancelled background task may run on before it is cancelled again."""


def _awaiting(task: asyncio.Task[object]) -> str:
    """Where a stuck task waits: its chain of awaited coroutines, outermost first (``file:line function``)."""
    where: list[str] = []
    coro: object = task.get_coro()
    while coro is not None and len(where) < 30:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            where.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " <- ".join(reversed(where)) or "(not started)"


def _task_name(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or task.get_name()


class Shutdown:
    """Runs the shutdown steps in order, each within ``step_s``; remembers what overran.

    >>> import asyncio
    >>> async def main() -> list[str]:
    ...     shutdown = Shutdown(step_s=0.05)
    ...     await shutdown.step("hangs", lambda: asyncio.sleep(3600))
    ...     await shutdown.step("returns", lambda: asyncio.sleep(0))
    ...     return shutdown.overran
    >>> asyncio.run(main())
    ['hangs']
    """

    def __init__(self, step_s: float = STEP_S) -> None:
        self.step_s = step_s
        self.overran: list[str] = []
        self._abandoned: list[asyncio.Task[object]] = []  # held so that they are not collected mid-run

    async def cancel_tasks(self, tasks: Sequence[asyncio.Task[object]]) -> None:
        """Cancel the app's background tasks and wait up to ``step_s`` for them to end.

        A task still running ``RECANCEL_S`` after its cancellation is cancelled again: on Python 3.11
        ``asyncio.wait_for`` drops a cancellation that arrives as its inner call completes (seen here: the
        freshness probe then polled on, and the gateway never finished its shutdown).
        """
        deadline = time.monotonic() + self.step_s
        pending: set[asyncio.Task[object]] = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, left))
            for task in pending:
                log.info("shutdown: task %s did not take its cancellation; cancelling it again", _task_name(task))
        for task in pending:
            self._overrun(f"task {_task_name(task)}", task)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning("shutdown: task %s had failed: %r", _task_name(task), task.exception())

    async def step(self, name: str, close: Callable[[], Awaitable[object]]) -> None:
        """Run ``close()`` as a task; past ``step_s`` it is cancelled and abandoned, and logged by ``name``."""
        started = time.monotonic()
        task: asyncio.Task[object] = asyncio.ensure_future(close())
        done, _ = await asyncio.wait({task}, timeout=self.step_s)
        if not done:
            self._overrun(name, task)
            task.cancel()
            return
        took = time.monotonic() - started
        if took > self.step_s / 4:
            log.info("shutdown: %s took %.1f s", name, took)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("shutdown: %s failed after %.1f s: %r", name, took, exc)

    def _overrun(self, name: str, task: asyncio.Task[object]) -> None:
        self.overran.append(name)
        self._abandoned.append(task)
        log.warning("shutdown: %s did not finish within %.1f s; abandoned (it waited at %s)", name, self.step_s,
                    _awaiting(task))  # fmt: skip
