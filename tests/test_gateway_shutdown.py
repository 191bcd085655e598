"""The gateway's bounded application shutdown (gateway/shutdown.py), with in-process tasks.

The failure it guards against was seen in ``gateway --workers 2``: the freshness probe's task lost its
cancellation (Python 3.11's ``wait_for`` drops one that arrives as its inner call completes) and polled on,
so the lifespan's ``await task`` never returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from gateway.shutdown import Shutdown


async def _swallows_first_cancel(started: asyncio.Event, ended: list[str]) -> None:
    """Loses the first cancellation, as the probe did; ends on the second."""
    started.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    try:
        await asyncio.Event().wait()
    finally:
        ended.append("second cancel")


async def _never_ends(started: asyncio.Event) -> None:
    started.set()
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


async def test_a_task_that_loses_its_cancellation_is_cancelled_again() -> None:
    ended: list[str] = []
    started = asyncio.Event()
    task = asyncio.create_task(_swallows_first_cancel(started, ended))
    await started.wait()  # it is inside its first wait: the first cancel lands there
    shutdown = Shutdown(step_s=5.0)
    await shutdown.cancel_tasks([task])
    assert task.cancelled()
    assert ended == ["second cancel"]
    assert shutdown.overran == []


async def test_a_task_that_never_ends_is_named_and_abandoned(caplog: pytest.LogCaptureFixture) -> None:
    ok = asyncio.create_task(asyncio.Event().wait())
    started = asyncio.Event()
    stuck = asyncio.create_task(_never_ends(started), name="stuck")
    await started.wait()
    shutdown = Shutdown(step_s=0.2)
    with caplog.at_level(logging.WARNING, logger="gateway.shutdown"):
        await shutdown.cancel_tasks([ok, stuck])
    assert ok.cancelled()
    assert shutdown.overran == ["task _never_ends"]
    assert "task _never_ends did not finish within 0.2 s" in caplog.text
    assert "_never_ends" in caplog.text.split("it waited at", 1)[1]  # where it waited is in the log
    stuck.get_coro().close()  # end it for good, so that the test's loop can close


async def test_steps_after_an_overrun_still_run(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    async def close(name: str) -> None:
        ran.append(name)

    async def fails() -> None:
        raise ConnectionError("already gone")

    shutdown = Shutdown(step_s=0.1)
    with caplog.at_level(logging.WARNING, logger="gateway.shutdown"):
        await shutdown.step("slow close", lambda: asyncio.sleep(3600))
        await shutdown.step("failing close", fails)
        await shutdown.step("Redis close", lambda: close("redis"))
    assert shutdown.overran == ["slow close"]
    assert ran == ["redis"]
    assert "failing close failed" in caplog.text and "already gone" in caplog.text
