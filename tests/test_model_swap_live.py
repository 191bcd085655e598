"""A hot swap under a live replay (real Tansu broker, real Redis, a real worker process) loses and doubles nothing.

The replay produces the STREAM while the swap re-encodes users in small batches, each batch waiting for
the worker to apply more events first, so swap writes and worker commits interleave. The oracle is a
clean run on the new model: the worker's processor applying the same events from scratch with it.
"""

from __future__ import annotations

import subprocess
import sys

from models.registry import ModelSet
from streams.store import redis_snapshot
from streams.swap import DONE, model_pointer, run_swap, start_swap
from tests.live_system import Live
from tests.stream_support import reference_state, stats, stream_rows, wait_for
from tests.swap_support import save_model, state_differences

EVENTS = 5000


def test_a_hot_swap_under_a_live_replay_loses_and_doubles_nothing(live: Live) -> None:
    s = live.settings
    save_model(s.models_dir, "m0002", live.runtime.movie_ids, seed=1)
    rows = stream_rows(s, EVENTS)
    live.worker("w1")
    replay = subprocess.Popen([sys.executable, "-m", "reelstream.shell.cli", "replay", "--rate", "800", "--limit",
                               str(EVENTS)], env=live.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    applied = lambda: stats(live.redis).get("events_applied", 0)  # noqa: E731
    try:
        wait_for(lambda: applied() >= 800, 120, "the first 800 events applied")
        start_swap(s.models_dir, live.redis, "m0002")
        at_start = applied()
        last = {"n": at_start}

        def after_more_events(uids: list[int]) -> None:
            """Each write waits for the worker to apply more events (while the replay still sends)."""
            wait_for(lambda: applied() > last["n"] or replay.poll() is not None, 60, "more events applied")
            last["n"] = applied()

        summary = run_swap(s.models_dir, live.redis, batch=10, on_batch=after_more_events)
        during = applied() - at_start
        out, _ = replay.communicate(timeout=300)
    finally:
        if replay.poll() is None:
            replay.kill()
    assert replay.returncode == 0, out
    wait_for(lambda: applied() >= EVENTS, 120, f"all {EVENTS} events applied")
    assert summary is not None and model_pointer(live.redis)["swap"] == DONE
    assert during > 0 and summary.passes >= 1, "the swap did not overlap the replay"
    assert stats(live.redis)["events_applied"] == EVENTS  # nothing applied twice (nor lost: every event is in)
    expected = reference_state(s, ModelSet(s.models_dir).load("m0002"), rows)
    problems = state_differences(expected, redis_snapshot(live.redis))
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
    models = {live.redis.hget(k, "model_version") for k in live.redis.scan_iter(match="rs:user:*")
              if k.count(b":") == 2}  # fmt: skip
    assert models == {b"m0002"}
