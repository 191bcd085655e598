"""The live walk (``reelstream walk``, streams/live_walk.py) against the offline walk of the same model.

The end-to-end case runs the command on the bundled store with a tiny model: its own broker, Redis, worker and
gateway, STREAM's first events replayed with every user served. Its oracle for which events are scored is the
documented rule written here with polars (a rating of at least 4 stars of a movie with a HISTORY rating that
the user had not rated before), not the walk's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bootstrap.store import load_store
from reelstream.settings import Settings
from streams.live_walk import OfflineWalk, WalkStep, compare
from tests.live_system import install_var

EVENTS = 250


def _offline(events: list[tuple[int, int]], ranks: list[int]) -> OfflineWalk:
    users, movies = zip(*events, strict=True)
    return OfflineWalk(np.array(users), np.array(movies), np.array(ranks), 0.0)


def test_compare_lines_the_walks_up_event_by_event() -> None:
    steps = [WalkStep(1, 10, "personalised", False, 3), WalkStep(1, 11, "personalised", False, None),
             WalkStep(2, 10, "trending", False, 20), WalkStep(2, 12, "personalised", False, 21)]  # fmt: skip
    offline = _offline([(1, 10), (1, 11), (2, 10), (2, 12)], [3, 40, 25, 21])
    got = compare(steps, offline)
    # live hits: rank 3 and rank 20 -> 2 of 4; offline: rank 3 only -> 1 of 4; they disagree on (2, 10)
    assert (got["live_hr"], got["offline_hr"], got["difference"], got["disagree"]) == (0.5, 0.25, 0.25, 1)
    assert got["by_source"]["trending"] == {"events": 1, "live_hr": 1.0, "offline_hr": 0.0, "disagree": 1}
    assert got["by_source"]["personalised"] == {"events": 3, "live_hr": 0.3333, "offline_hr": 0.3333, "disagree": 0}


def test_walks_that_scored_other_events_are_refused() -> None:
    steps = [WalkStep(1, 10, "personalised", False, 1), WalkStep(1, 12, "personalised", False, 1)]
    with pytest.raises(ValueError, match="first difference at scored event 1"):
        compare(steps, _offline([(1, 10), (1, 11)], [1, 1]))


def _scored_by_rule(store_dir: Path, n: int) -> list[tuple[int, int]]:
    store = load_store(store_dir)
    history = store.history.select("user_id", "movie_id")
    known = set(history["movie_id"].to_list())
    seen = set(zip(history["user_id"].to_list(), history["movie_id"].to_list(), strict=True))
    out = []
    for u, m, r in store.stream.head(n).select("user_id", "movie_id", "rating").iter_rows():
        if r >= 4.0 and m in known and (u, m) not in seen:
            out.append((u, m))
        seen.add((u, m))
    return out


def test_the_live_walk_serves_what_the_offline_walk_ranks(settings: Settings, built_var: Path, tmp_path) -> None:
    install_var(settings, built_var)
    env = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP", "REDIS_URL"}}
    env["REELSTREAM_VAR_DIR"] = str(settings.var_dir)
    done = subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "walk", "--limit", str(EVENTS)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((settings.reports_dir / "live_walk.json").read_text())
    expected = _scored_by_rule(settings.store_dir, EVENTS)
    assert report["events"] == EVENTS and report["scored_events"] == len(expected) > 50
    assert report["failed_requests"] == 0 and report["late_lists"] == 0 and report["cached"] == 0
    # the goal is agreement within 0.01; with every list waiting for the state before it, it is exact
    assert abs(report["difference"]) <= 0.01
    personalised = report["by_source"]["personalised"]
    assert personalised["disagree"] == 0 and personalised["events"] >= len(expected) - 10
    # every list was recorded and attributed by the worker: one impression per event walked
    assert sum(a["impressions"] for a in report["worker_attribution"]) == EVENTS
    assert not any((settings.var_dir / "walk" / "run").glob("*.pid")), "the private system was not stopped"
