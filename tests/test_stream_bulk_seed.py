"""The bulk seed (streams/bulk_seed.py) leaves the Redis the per-event seed leaves, and resumes exactly.

Two databases of the session's Redis: the per-event seed (the oracle: the worker's processor and fenced
script) writes one, the bulk seed the other, and every ``rs:*`` key is dumped raw (bytes as Redis returns
them) and compared. Exact, byte for byte, for every hash, list, string and for ``rs:items:popular``; the
scores of ``rs:items:trending`` and ``rs:items:prior`` are compared to 1e-9 absolute (scores near 2,000 and
500, so ~1e-12 relative): the per-event path chains ``logaddexp`` within each ``seed_batch`` and again across
batches, so its own last bits depend on the batch size, and the bulk path sums ``exp(x - max)`` per movie
instead; there is no batch-independent bit pattern to match. ``rs:online`` is left out of the bulk seed
(the river model lives in the seeding process; docs/redis-keys.md) and ``rs:seed`` records the run's times.

The worker folds STREAM events in on top of a seed reading only what these dumps hold (the user fields, the
rated entries, the recent lists, the fences, ``rs:model``; item ops are increments), so identical dumps give
identical states after the stream; ``test_bulk_equals_per_event_on_the_bundled_history`` also applies the
first STREAM rows through the worker's processor on both and compares again.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis

from bootstrap.store import load_store
from models.runtime import ModelRuntime
from reelstream.errors import DataError
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.wire import codec_for
from streams import bulk_seed
from streams.bulk_seed import BULK_ROWS, BULK_USER
from streams.events import rating_event, user_key
from streams.processor import Message, RatingProcessor
from streams.seed import fold_history, read_marker, seed_history
from streams.store import RedisFeatureTables
from tests.stream_support import bootstrap_var, stats, store_and_model, stream_rows

#: Absolute tolerance on trending and prior scores (module docstring).
ZSET_ABS = 1e-9
#: Rows per bulk user batch in the resume tests: several batches over the bundled HISTORY.
BULK_BATCH = 20_000


class Killed(Exception):
    """The seed process dying at a chosen point."""


@pytest.fixture(scope="module")
def built_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bootstrap_var(tmp_path_factory.mktemp("bulk-seed-var")) / "store"


class Case:
    """One test's settings and model, the per-event database (``oracle``) and the bulk one (``redis``)."""

    def __init__(self, settings: Settings, runtime: ModelRuntime, env: dict[str, str]) -> None:
        self.settings, self.runtime, self.env = settings, runtime, env
        self.redis = redis.Redis.from_url(settings.redis_url)
        at = self.redis.connection_pool.connection_kwargs  # the URL's db wins over from_url's db argument
        self.oracle = redis.Redis(host=at["host"], port=at["port"], db=int(at.get("db", 0)) + 1)
        self.oracle.flushdb()

    def history(self) -> pl.DataFrame:
        return load_store(self.settings.store_dir).history.select("user_id", "movie_id", "rating", "ts")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "seed", *args], env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip

    def close(self) -> None:
        self.oracle.flushdb()
        self.oracle.close()
        self.redis.close()


@pytest.fixture
def case(live_settings: Settings, subprocess_env: dict[str, str], built_store: Path, monkeypatch: pytest.MonkeyPatch,
         request: pytest.FixtureRequest) -> Iterator[Case]:  # fmt: skip
    settings, names, runtime = store_and_model(monkeypatch, built_store, request.node.name[5:25].replace("_", "-"))
    c = Case(settings, runtime, {**subprocess_env, **names})
    try:
        yield c
    finally:
        c.close()


def dump(client: redis.Redis) -> dict[str, Any]:
    """Every ``rs:*`` key but the marker, raw: hashes as {bytes: bytes}, lists, zsets as {member: score}."""
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"{keys.PREFIX}:*", count=1000):
        key = raw.decode()
        if key == keys.SEED:
            continue
        kind = client.type(raw).decode()
        if kind == "hash":
            out[key] = client.hgetall(raw)
        elif kind == "list":
            out[key] = client.lrange(raw, 0, -1)
        elif kind == "zset":
            out[key] = dict(client.zrange(raw, 0, -1, withscores=True))
        else:
            out[key] = client.get(raw)
    return out


def differences(oracle: dict[str, Any], bulk: dict[str, Any]) -> list[str]:
    """What differs between the per-event dump and the bulk one (module docstring: exact, zset scores aside)."""
    problems = [f"{k}: only in {'per-event' if k in oracle else 'bulk'}" for k in sorted(set(oracle) ^ set(bulk))]
    for k in sorted(set(oracle) & set(bulk)):
        a, b = oracle[k], bulk[k]
        if k in (keys.ITEMS_TRENDING, keys.ITEMS_PRIOR):
            if set(a) != set(b):
                problems.append(f"{k}: members differ ({len(a)} vs {len(b)})")
            problems += [f"{k}[{m!r}]: {a[m]!r} vs {b[m]!r}" for m in a if m in b and abs(a[m] - b[m]) > ZSET_ABS]
        elif a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                problems += [f"{k}[{f!r}]: {a.get(f)!r:.60} vs {b.get(f)!r:.60}" for f in sorted(set(a) | set(b))
                             if a.get(f) != b.get(f)]  # fmt: skip
            else:
                problems.append(f"{k}: {a!r:.80} vs {b!r:.80}")
    return problems


def assert_same(oracle: redis.Redis, bulk: redis.Redis) -> None:
    expected, got = dump(oracle), dump(bulk)
    assert keys.ONLINE in expected and keys.ONLINE not in got  # fed per event only (module docstring)
    del expected[keys.ONLINE]
    problems = differences(expected, got)
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
    assert len(got) > 100  # users, items, zsets, offsets: a real comparison


def apply_stream(case: Case, client: redis.Redis, rows: list[tuple[int, int, float, int]]) -> None:
    """STREAM rows through the worker's processor and script (one partition of the ratings topic)."""
    codec, s = codec_for("RatingEvent"), case.settings
    msgs = [
        Message(s.topic_ratings, 0, i, codec.encode(rating_event(u, m, r, ts * 1000, "replay")), ts * 1000,
                user_key(u))
        for i, (u, m, r, ts) in enumerate(rows)
    ]  # fmt: skip
    processor = RatingProcessor(
        case.runtime, RedisFeatureTables(client), topic=s.topic_ratings, min_ts_ms=s.event_min_ts_ms,
        max_future_ms=s.event_max_future_ms, half_life_s=s.trending_half_life_s, probe_user_base=s.probe_user_base,
    )  # fmt: skip
    for lo in range(0, len(msgs), 1000):
        processor.run(msgs[lo : lo + 1000])


def test_bulk_equals_per_event_on_the_bundled_history(case: Case) -> None:
    rows = case.history().height
    oracle = seed_history(case.settings, client=case.oracle, per_event=True, rewind=False)
    bulk = seed_history(case.settings, client=case.redis, rewind=False)
    assert (oracle.path, bulk.path) == ("per-event", "bulk")
    assert (bulk.applied, bulk.skipped, bulk.dead, bulk.users) == (oracle.applied, 0, 0, oracle.users)
    assert bulk.applied == rows
    assert_same(case.oracle, case.redis)
    marker, expected = read_marker(case.redis), read_marker(case.oracle)
    assert marker is not None and expected is not None
    times = ("started_ms", "finished_ms")
    assert {k: v for k, v in marker.items() if k not in times} == {
        k: v for k, v in expected.items() if k not in times
    }  # status done, versions, rows, topic; no bulk cursor left

    # The worker on top of either seed: the same state again (movies HISTORY users rated, new users, re-ratings).
    stream = stream_rows(case.settings, limit=3000)
    apply_stream(case, case.oracle, stream)
    apply_stream(case, case.redis, stream)
    expected_dump, got = dump(case.oracle), dump(case.redis)
    assert int(got.pop(keys.ONLINE)[b"n"]) == len(stream)  # the stream's events only; per event HISTORY's too
    del expected_dump[keys.ONLINE]
    problems = differences(expected_dump, got)
    assert not problems, f"after the stream: {len(problems)} differences, first: {problems[:5]}"


def edited_history(case: Case) -> pl.DataFrame:
    """The first HISTORY rows plus re-ratings, exact duplicates and rows the worker's rules refuse."""
    base = case.history().head(6000)
    u, m, _, t = base.row(10)
    u2, m2, _, t2 = base.row(20)
    u2_rows = base.filter(pl.col("user_id") == u2)
    extra = [
        (u, m, 2.0, t + 10),
        (u, m, 5.0, t + 20),
        (u, m, 5.0, t + 20),  # re-ratings (to not liked, liked), a copy
        (u, m, 2.0, t + 10),  # a copy of a superseded rating: a duplicate too
        (u2, m2, 3.5, t2 + 5),
        (u2, 999_999_999, 4.0, t2),  # a re-rating; a movie nobody announced
        (u2, m2, 7.0, t2),
        (u2, m2, 4.0, 1000),
        (case.settings.probe_user_base + 3, m2, 4.0, t2),  # refused
        (u2, int(u2_rows["movie_id"][0]), 1.0, t2 + 9),  # u2's first movie re-rated: weight 1 -> 0 or 0 -> 0
    ]
    return pl.concat([base, pl.DataFrame(extra, schema=base.schema, orient="row")])


def test_re_ratings_duplicates_and_refused_rows_match_the_per_event_path(case: Case) -> None:
    history = edited_history(case)
    oracle = fold_history(case.settings, case.oracle, case.runtime, history, 1)
    bulk = fold_history(case.settings, case.redis, case.runtime, history, 1, bulk=True)
    assert (oracle.path, bulk.path) == ("per-event", "bulk")
    assert bulk.dead == oracle.dead == 4
    assert bulk.dead_reasons == oracle.dead_reasons == {
        "unknown_movie": 1, "rating_out_of_range": 1, "bad_timestamp": 1, "reserved_user": 1,
    }  # fmt: skip
    assert (bulk.applied, bulk.skipped) == (oracle.applied, oracle.skipped) == (history.height - 6, 2)
    assert_same(case.oracle, case.redis)
    assert stats(case.redis) == {"events_applied": history.height - 6, "dead_letters": 4, "duplicates_skipped": 2}


def test_a_bulk_seed_killed_after_its_first_batch_resumes_to_the_same_state_and_a_rerun_is_a_no_op(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_history(case.settings, client=case.oracle, per_event=True, rewind=False)
    rows = case.history().height

    def killed(batches: int) -> None:
        raise Killed("after the first user batch")

    with pytest.raises(Killed):
        seed_history(case.settings, client=case.redis, rewind=False, batch_size=BULK_BATCH, after_batch=killed)
    marker = read_marker(case.redis)
    assert marker is not None and marker["status"] == "running" and marker[BULK_ROWS] == str(rows)
    first_user = int(marker[BULK_USER])
    assert not case.redis.exists(keys.offsets(case.settings.seed_topic), keys.ITEMS_POPULAR)
    done_rows = int((case.history()["user_id"] <= first_user).sum())
    assert 0 < done_rows < rows

    # A rebuild (streams/rebuild.py) resumes through fold_history: it continues the bulk run, never folding
    # the written users' ratings in a second time. Killed again, while it writes the item tables.
    real_items = bulk_seed._write_items

    def items_then_killed(*args: Any) -> None:
        real_items(*args)
        raise Killed("while writing the item tables")

    monkeypatch.setattr(bulk_seed, "_write_items", items_then_killed)
    with pytest.raises(Killed):
        fold_history(case.settings, case.redis, case.runtime, case.history(), 1, batch_size=BULK_BATCH)
    monkeypatch.setattr(bulk_seed, "_write_items", real_items)
    resumed = seed_history(case.settings, client=case.redis, rewind=False, batch_size=BULK_BATCH)
    assert (resumed.path, resumed.applied, resumed.skipped, resumed.batches) == ("bulk", 0, rows, 0)
    assert_same(case.oracle, case.redis)

    before = dump(case.redis)
    again = seed_history(case.settings, client=case.redis, rewind=False)
    assert (again.applied, again.skipped, again.batches) == (0, rows, 0)
    assert dump(case.redis) == before
    assert read_marker(case.redis)["status"] == "done"  # type: ignore[index]


def test_an_interrupted_bulk_seed_is_continued_in_bulk_and_never_with_other_rows(case: Case) -> None:
    """Through the CLI: other rows are refused with the way out; ``--per-event`` continues the bulk run."""

    def killed(batches: int) -> None:
        raise Killed

    with pytest.raises(Killed):
        seed_history(case.settings, client=case.redis, rewind=False, batch_size=BULK_BATCH, after_batch=killed)
    with pytest.raises(DataError, match="same --limit"):
        seed_history(case.settings, client=case.redis, rewind=False, limit=5000)
    refused = case.cli("--limit", "5000")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stdout + refused.stderr
    assert "same --limit" in " ".join(refused.stderr.split()) and "--reset" in refused.stderr

    done = case.cli("--per-event")  # folding the written users' ratings in again would count them twice
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(bulk)" in done.stdout and "ratings/s" in done.stdout
    seed_history(case.settings, client=case.oracle, per_event=True, rewind=False)
    assert_same(case.oracle, case.redis)


def test_movie_index_lookup_agrees_by_table_and_by_binary_search() -> None:
    """Small dense ids go through a table, sparse or huge ones through a binary search: the same answer."""
    x = np.array([10, 3, 7, 3, 10])
    dense = bulk_seed._lookup(np.array([3, 7, 10]), np.array([5, -1, 9]), x)
    sparse_ids = bulk_seed._lookup(np.array([3, 7, 10]) * 2**40, np.array([5, -1, 9]), x * 2**40)
    assert dense.tolist() == sparse_ids.tolist() == [9, 5, -1, 5, 9]
