"""The gateway's background refreshers survive any error (a dead refresher would serve stale data silently)."""

from __future__ import annotations

import asyncio

from gateway.app import _refresh_every
from gateway.errors import StateUnavailable


async def test_a_refresher_goes_on_after_errors() -> None:
    calls: list[str] = []
    third = asyncio.Event()
    outcomes = [StateUnavailable("redis away"), RuntimeError("a bug in a record"), None]

    def refresh() -> None:
        outcome = outcomes[len(calls)] if len(calls) < len(outcomes) else None
        calls.append(type(outcome).__name__)
        if len(calls) >= 3:
            third.set()
        if outcome is not None:
            raise outcome

    task = asyncio.create_task(_refresh_every("test", refresh, 0.001))
    await asyncio.wait_for(third.wait(), 10)
    assert not task.done()  # neither error ended it
    task.cancel()
    assert calls[:3] == ["StateUnavailable", "RuntimeError", "NoneType"]
