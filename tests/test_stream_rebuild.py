"""Rebuilding Redis from HISTORY and the archive (``streams/rebuild.py``) against a real Redis.

The archive here is written with the archiver's own segment writer (``write_segment``): the STREAM split's
ratings spread over partitions by user, garbage records among them, a movie announcement and a rating of
that new movie, and a log reset halfway through partition 0 (its later records start again at offset 0, as
epoch 1). The oracle is the documented invariant: Redis = the worker's processors applied to HISTORY and
then every valid archived event (``_reference``: the same processors over a dict store), whatever order the
archive holds them in and however often the rebuild is interrupted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from aiokafka import AIOKafkaProducer

from bootstrap.store import load_store
from models.runtime import ModelRuntime, current_model_dir
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.wire import codec_for
from streams.archive import ArchivedRecord, archived_partitions, read_segments, write_segment
from streams.events import rating_event, user_key
from streams.log_identity import Fence
from streams.processor import ImpressionProcessor, Message, MovieProcessor, RatingProcessor
from streams.rebuild import RebuildSummary, rebuild_if_needed
from streams.seed import read_marker
from streams.store import MemoryFeatureTables, redis_snapshot
from tests.stream_support import (
    ArchiverProcess,
    StreamCase,
    apply_env,
    diff_states,
    install_model,
    open_case,
    reference_state,
    stats,
    store_and_model,
    stream_rows,
    wait_for,
)

#: STREAM events archived, partitions they spread over, records per segment.
EVENTS, PARTITIONS, SEGMENT = 2000, 4, 150
NEW_MOVIE = 990_000_001
#: Keys that record how and when state was written, not what it is (offsets and fences: checked on their own).
NOT_STATE = ("rs:seed", "rs:fence:", "rs:resets:", keys.REBUILD_LOCK)

Row = tuple[int, int, float, int]


@pytest.fixture(scope="module")
def built_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic set in MovieLens format, bootstrapped: a rebuild costs per HISTORY row, not per idea."""
    root = tmp_path_factory.mktemp("rebuild-var")
    env = {**os.environ, "REELSTREAM_VAR_DIR": str(root / "var")}
    for args in (["synth", "--ratings", "15000", "--users", "300", "--movies", "1500", "--out", str(root / "data")],
                 ["bootstrap", "--data", str(root / "data")]):  # fmt: skip
        subprocess.run([sys.executable, "-m", "reelstream.shell.cli", *args], env=env, check=True, capture_output=True,
                       timeout=300)  # fmt: skip
    return root / "var" / "store"


@dataclass
class Archive:
    """What the test wrote to the archive, and what it means."""

    valid: list[Row]  #: the valid rating events, in an order that keeps each user's events in order
    records: int  #: every archived record (valid or not, both topics)
    dead: int  #: records the processors must refuse
    tips: dict[int, tuple[int, int, str]]  #: ratings partition -> (epoch, offset, fingerprint) of its last record
    impressions: dict[int, list[bytes]]  #: impressions partition -> the archived ImpressionEvents, in offset order


@dataclass
class Case:
    settings: Settings
    env: dict[str, str]
    runtime: ModelRuntime
    redis: redis.Redis
    log_dir: Path

    def rows(self, split: str) -> list[Row]:
        frame = getattr(load_store(self.settings.store_dir), split)
        return list(frame.select("user_id", "movie_id", "rating", "ts").iter_rows())

    def snapshot(self) -> dict[str, Any]:
        return _state(redis_snapshot(self.redis))


@pytest.fixture
def case(
    live_settings: Settings, subprocess_env: dict[str, str], built_store: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> Iterator[Case]:  # fmt: skip
    settings, names, runtime = store_and_model(monkeypatch, built_store, request.node.name[5:22].replace("_", "-"))
    client = redis.Redis.from_url(settings.redis_url)
    try:
        yield Case(settings, {**subprocess_env, **names}, runtime, client, tmp_path)
    finally:
        client.close()


def _movie_value() -> bytes:
    return codec_for("MovieEvent").encode(
        {"movie_id": NEW_MOVIE, "title": "Brand New (2026)", "genres": ["Comedy"], "year": 2026, "tags": []}
    )


def _write_archive(settings: Settings, stream: list[Row]) -> Archive:
    """The archive a live system could have left (module docstring); returns what it holds."""
    encode = codec_for("RatingEvent").encode
    rows = [*stream[:EVENTS], (stream[0][0], NEW_MOVIE, 4.5, stream[EVENTS][3])]  # a rating of the announced movie
    parts: dict[int, list[tuple[bytes | None, bytes, int]]] = {p: [] for p in range(PARTITIONS)}
    valid: list[Row] = []
    dead = 0
    for i, (u, m, r, ts) in enumerate(rows):
        p = u % PARTITIONS
        if i % 997 == 5:
            parts[p].append((user_key(u), b"\x00 garbage a client produced", ts * 1000))
            dead += 1
        parts[p].append((user_key(u), encode(rating_event(u, m, r, ts * 1000, "replay")), ts * 1000 + 7))
        valid.append((u, m, r, ts))
    tips: dict[int, tuple[int, int, str]] = {}
    records = 0
    for p, items in parts.items():
        # Partition 0's log was reset halfway: the rest of it is a new log (epoch 1) from offset 0.
        logs = [items[: len(items) // 2], items[len(items) // 2 :]] if p == 0 else [items]
        for epoch, log in enumerate(logs):
            recs = [ArchivedRecord(o, ts, k, v) for o, (k, v, ts) in enumerate(log)]
            for lo in range(0, len(recs), SEGMENT):
                write_segment(settings.archive_dir, settings.topic_ratings, p, epoch, recs[lo : lo + SEGMENT])
            records += len(recs)
            tips[p] = (epoch, recs[-1].offset, recs[-1].fingerprint())
    movies = [ArchivedRecord(0, 1, str(NEW_MOVIE).encode(), _movie_value()), ArchivedRecord(1, 2, b"x", b"not avro")]
    write_segment(settings.archive_dir, settings.topic_movies, 0, 0, movies)
    imps = _impressions(rows)
    for p, values in imps.items():
        write_segment(settings.archive_dir, settings.topic_impressions, p, 0,
                      [ArchivedRecord(o, 1, b"k", v) for o, v in enumerate(values)])  # fmt: skip
    n_imps = sum(len(v) for v in imps.values())
    return Archive(valid, records + len(movies) + n_imps, dead + 1, tips, imps)


def _impressions(rows: list[Row]) -> dict[int, list[bytes]]:
    """A served list before the first event of each of 40 users: their next 5 movies among 15 others, so
    later archived ratings hit them (two arms)."""
    codec, out = codec_for("ImpressionEvent"), {p: [] for p in range(PARTITIONS)}
    firsts: dict[int, int] = {}
    for u, _m, _r, ts in rows:
        firsts.setdefault(u, ts)
    others = sorted({m for _u, m, _r, _ts in rows})[:60]
    for n, (u, ts) in enumerate(list(firsts.items())[:40]):
        theirs = list(dict.fromkeys(m for uu, m, _r, _ts in rows if uu == u))[:5]
        mids = list(dict.fromkeys([*theirs, *(m for m in others if m not in theirs)]))[:20]
        ev = {"impression_id": f"r{n}", "user_id": u, "movie_ids": mids, "variant": ("control", "diverse")[n % 2],
              "segment": "new", "model_version": "m0001", "rules_version": "r", "source": "personalised",
              "cached": False, "degraded": False, "exploration": "none", "served_ms": (ts - 1) * 1000,
              "clock": "event", "novelty": 4.0}  # fmt: skip
        out[u % PARTITIONS].append(codec.encode(ev))
    return out


def _reference(settings: Settings, history: list[Row], archive: Archive) -> dict[str, Any]:
    """HISTORY then every valid archived event, through the worker's processors over a dict store."""
    runtime = ModelRuntime.load(current_model_dir(settings.models_dir))  # its own: processors add new movies
    store = MemoryFeatureTables()
    movies = MovieProcessor(runtime, store, topic=settings.topic_movies)
    assert movies.commit(movies.plan([Message(settings.topic_movies, 0, 0, _movie_value(), 1, b"m")]))
    encode = codec_for("RatingEvent").encode
    msgs = [
        Message(settings.topic_ratings, 0, i, encode(rating_event(u, m, r, ts * 1000, "replay")), ts * 1000,
                user_key(u))
        for i, (u, m, r, ts) in enumerate(history + archive.valid)
    ]  # fmt: skip
    RatingProcessor(
        runtime, store, topic=settings.topic_ratings, min_ts_ms=settings.event_min_ts_ms,
        max_future_ms=settings.event_max_future_ms, half_life_s=settings.trending_half_life_s,
        probe_user_base=settings.probe_user_base,
    ).run(msgs)  # fmt: skip
    served = ImpressionProcessor(store, topic=settings.topic_impressions, window_s=settings.attribution_window_s)
    for p, values in archive.impressions.items():  # after the ratings, as the rebuild does: order-independent
        assert served.commit(served.plan([Message(settings.topic_impressions, p, o, v, 1, b"k")
                                          for o, v in enumerate(values)]))  # fmt: skip
    return _state(store.snapshot())


def _state(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The view's content: bookkeeping keys left out, and a movie's ``updated_ms`` (its write time)."""
    out = {k: v for k, v in snapshot.items() if not k.startswith(NOT_STATE)}
    for k, v in out.items():
        if k.startswith("rs:movie:"):
            out[k] = {f: x for f, x in v.items() if f != "updated_ms"}
    return out


def _assert_rebuilt(case: Case, history: list[Row], archive: Archive, expected: dict[str, Any]) -> None:
    problems = diff_states(expected, case.snapshot())
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
    assert stats(case.redis)["events_applied"] == len(history) + len(archive.valid)  # nothing applied twice
    # The fences end where a clean worker's would after reading those logs: the last record of the newest
    # epoch of each partition, with its fingerprint; the worker continues from there (the log tail).
    s = case.settings
    offsets = case.redis.hgetall(keys.offsets(s.topic_ratings))
    identities = case.redis.hgetall(keys.fence(s.topic_ratings))
    for p, (epoch, offset, fp) in archive.tips.items():
        fence = Fence.parse(offsets[str(p).encode()], identities[str(p).encode()])
        assert (fence.epoch, fence.offset, fence.fingerprint) == (epoch, offset, fp)
    marker = read_marker(case.redis)
    assert marker is not None and marker["status"] == "done" and marker["rebuild"] == "done"
    assert marker["archive_records"] == str(archive.records)


def test_rebuild_equals_history_plus_archive_one_rebuilder_at_a_time_and_a_rerun_changes_nothing(case: Case) -> None:
    history, stream = case.rows("history"), case.rows("stream")
    archive = _write_archive(case.settings, stream)
    case.redis.hset(keys.user(stream[0][0]), "version", 99)  # debris of a worker that wrote into a flushed Redis

    results: list[RebuildSummary | None] = []

    def call() -> None:
        client = redis.Redis.from_url(case.settings.redis_url)
        try:
            results.append(rebuild_if_needed(case.settings, client))
        finally:
            client.close()

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 2 and results.count(None) == 1, results  # one rebuilt, the other waited for it
    summary = next(r for r in results if r is not None)
    assert summary.reason == "missing" and summary.history is not None
    assert summary.history.applied == len(history)
    assert (summary.applied, summary.movies, summary.dead) == (len(archive.valid), 1, archive.dead)
    assert summary.impressions == sum(len(v) for v in archive.impressions.values()) == 40
    assert summary.dead_reasons == {"undecodable": archive.dead}
    assert summary.epochs_crossed == 1 and summary.archive_records == archive.records
    assert summary.deleted_keys == 1 and summary.skipped == 0
    _assert_rebuilt(case, history, archive, _reference(case.settings, history, archive))
    arms = case.snapshot()  # the served lists' outcomes came back with the user state
    assert all(float(arms[f"rs:exp:{a}:new"]["hits"]) > 0 for a in ("control", "diverse"))

    before = redis_snapshot(case.redis)
    assert rebuild_if_needed(case.settings, case.redis) is None  # the view is there: nothing to do
    assert redis_snapshot(case.redis) == before


def test_a_rebuild_killed_midway_then_rerun_gives_the_same_state_and_a_new_model_rebuilds(case: Case) -> None:
    history, stream = case.rows("history"), case.rows("stream")
    archive = _write_archive(case.settings, stream)
    env = {**case.env, "REELSTREAM_REBUILD_LOCK_TTL_S": "5", "REELSTREAM_REBUILD_BATCH": "20"}
    log = case.log_dir / "rebuild.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "reelstream.shell.cli", "rebuild"], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        # Killed once it is applying the archive's ratings (HISTORY and the movies are in).
        wait_for(lambda: proc.poll() is None and case.redis.exists(keys.offsets(case.settings.topic_ratings)) == 1,
                 300, "the rebuild to reach the archive's ratings")  # fmt: skip
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    marker = read_marker(case.redis)
    assert marker is not None and marker["rebuild"] == "running", log.read_text()[-2000:]
    assert stats(case.redis)["events_applied"] < len(history) + len(archive.valid)
    assert case.redis.exists(keys.REBUILD_LOCK)  # left by the killed process; it expires by itself

    again = rebuild_if_needed(case.settings, case.redis)
    assert again is not None and again.reason == "partial" and again.waited_s > 0
    assert again.history is not None and again.history.applied == 0  # fenced: HISTORY was complete
    assert again.skipped > 0 and again.applied < len(archive.valid)  # resumed, not redone
    _assert_rebuilt(case, history, archive, _reference(case.settings, history, archive))
    assert not case.redis.exists(keys.REBUILD_LOCK)

    # Another model: every state depends on its weights, so the view is stale and rebuilt from scratch.
    install_model(case.settings, case.runtime.movie_ids, seed=1)
    stale = rebuild_if_needed(case.settings, case.redis)
    assert stale is not None and stale.reason == "stale" and stale.deleted_keys > 0
    _assert_rebuilt(case, history, archive, _reference(case.settings, history, archive))


async def _produce(settings: Settings, rows: list[Row]) -> None:
    """Rating events keyed by user, as ``reelstream replay`` sends them."""
    encode = codec_for("RatingEvent").encode
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic_ratings, encode(rating_event(u, m, r, ts * 1000, "replay")),
                                key=user_key(u))
            for u, m, r, ts in rows
        ]  # fmt: skip
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _archived_ratings(settings: Settings) -> int:
    topic = settings.topic_ratings
    return sum(f.height for p in archived_partitions(settings.archive_dir, topic)
               for _, f in read_segments(settings.archive_dir, topic, p))  # fmt: skip


def test_redis_flushed_under_a_running_worker_is_rebuilt_from_history_archive_and_log_tail(
    live_settings: Settings, subprocess_env: dict[str, str], built_store: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:  # fmt: skip
    _, names, runtime = store_and_model(monkeypatch, built_store, "flushall")
    names |= {"REELSTREAM_WORKER_REBUILD": "true", "REELSTREAM_ARCHIVE_SEGMENT_AGE_S": "0.3"}
    settings = apply_env(monkeypatch, names)
    env = {**subprocess_env, **names}
    with open_case(StreamCase, settings, env, runtime, tmp_path) as case:
        history = list(load_store(settings.store_dir).history.select("user_id", "movie_id", "rating", "ts").iter_rows())
        stream = stream_rows(settings, 1500)
        archived, tail, after = stream[:600], stream[600:1200], stream[1200:]
        archiver = ArchiverProcess(env, tmp_path / "archive.log")
        try:
            worker = case.worker("w1")

            def applied(n: int) -> Callable[[], bool]:
                def check() -> bool:
                    assert worker.alive(), worker.tail()
                    return stats(case.redis).get("events_applied", 0) == n

                return check

            # 1. An empty Redis: the worker's start-up hook rebuilds it (HISTORY; the archive is still empty).
            wait_for(applied(len(history)), 120, "the worker's start-up rebuild of HISTORY")
            # 2. Events the archive holds, then events only the log holds (the archiver is stopped).
            asyncio.run(_produce(settings, archived))
            wait_for(applied(len(history) + len(archived)), 120, "the first events applied")
            wait_for(lambda: _archived_ratings(settings) == len(archived), 60, "the first events archived")
            assert archiver.stop() == 0
            asyncio.run(_produce(settings, tail))
            wait_for(applied(len(history) + len(archived) + len(tail)), 120, "the log-only events applied")
            # 3. Redis loses everything under the running worker; new events arrive.
            case.redis.flushall()
            asyncio.run(_produce(settings, after))
            wait_for(applied(len(history) + len(stream)), 180, "Redis rebuilt (HISTORY + archive + log tail)")
        finally:
            archiver.stop()
        expected = _state(reference_state(settings, case.runtime, history + stream))
        problems = diff_states(expected, _state(redis_snapshot(case.redis)))
        assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
        marker = read_marker(case.redis)
        assert marker is not None and marker["rebuild"] == "done"
        assert marker["archive_records"] == str(len(archived))
        assert worker.alive() and "Redis state rebuilt" in worker.tail()
