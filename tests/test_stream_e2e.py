"""End to end with a real broker, a real Redis and real ``reelstream worker`` processes.

Every test gets its own topics and consumer group (the session's broker is
shared) and a clean Redis database. Nothing sleeps to synchronise: each wait
polls a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from reelstream.settings import Settings
from schemas.user_record import decode_rated_entry
from schemas.wire import codec_for
from streams.admin import high_watermarks
from streams.events import rating_event, user_key
from streams.replay import read_checkpoint
from streams.store import redis_snapshot
from tests.live_system import GatewayProcess
from tests.stream_support import StreamCase as BaseCase
from tests.stream_support import (
    bootstrap_var,
    diff_states,
    open_case,
    read_topic,
    reference_state,
    stats,
    store_and_model,
    stream_rows,
    wait_for,
)

APPLY_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def built_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled ml-latest-small bootstrapped once per session (its STREAM split is ~20k events)."""
    return bootstrap_var(tmp_path_factory.mktemp("store-var")) / "store"


@dataclass
class StreamCase(BaseCase):
    """A stream case that can also run the replay and wait for applied events."""

    def replay(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "replay", *args], env=self.env,
                              capture_output=True, text=True, timeout=300, check=check)  # fmt: skip

    def wait_applied(self, n: int, dead: int = 0) -> None:
        def done() -> bool:
            for w in self.workers:
                assert w.alive() or w.proc.returncode == -9, f"worker {w.name} died:\n{w.tail()}"
            s = stats(self.redis)
            return s.get("events_applied", 0) >= n and s.get("dead_letters", 0) >= dead

        try:
            wait_for(done, APPLY_TIMEOUT_S, f"{n} events applied and {dead} dead letters")
        except AssertionError:
            raise AssertionError(f"stats {stats(self.redis)}\n" + "\n".join(w.tail() for w in self.workers)) from None


@pytest.fixture
def case(
    live_settings: Settings, subprocess_env: dict[str, str], built_store: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> Iterator[StreamCase]:  # fmt: skip
    settings, names, runtime = store_and_model(monkeypatch, built_store, request.node.name[:20].replace("_", "-"))
    with open_case(StreamCase, settings, {**subprocess_env, **names}, runtime, tmp_path) as c:
        yield c


def _assert_matches_reference(case: StreamCase, rows: list[tuple[int, int, float, int]]) -> None:
    expected = reference_state(case.settings, case.runtime, rows)
    got = redis_snapshot(case.redis)
    problems = diff_states(expected, got)
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
    s = stats(case.redis)
    assert s["events_applied"] == len(rows)
    assert int(case.redis.hget("rs:online", "n")) == len(rows)


def _assert_offsets_at_end(case: StreamCase) -> None:
    ends = asyncio.run(high_watermarks(case.settings, case.settings.topic_ratings))
    stored = {int(p): int(o) for p, o in case.redis.hgetall(f"rs:offsets:{case.settings.topic_ratings}").items()}
    assert stored == {p: hw - 1 for p, hw in ends.items() if hw > 0}


async def _committed(settings: Settings, topic: str) -> dict[int, int]:
    """The worker group's (``settings.app_id``) committed offsets, as ``reelstream lag`` reads them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        got = await admin.list_consumer_group_offsets(settings.app_id, partitions=tps)  # docs/infra.md defect 2
        return {tp.partition: meta.offset for tp, meta in got.items() if meta.offset >= 0}
    finally:
        await admin.close()


def test_replay_leaves_redis_equal_to_the_python_reference(case: StreamCase) -> None:
    rows = stream_rows(case.settings)
    case.worker("w1")
    result = case.replay("--max")
    assert f"replayed {len(rows):,} events" in result.stdout
    case.wait_applied(len(rows))
    _assert_matches_reference(case, rows)
    _assert_offsets_at_end(case)
    assert case.redis.exists("rs:worker:w1")
    # The group commits to Kafka (what the lag monitor reads) after Redis holds the effect.
    ends = asyncio.run(high_watermarks(case.settings, case.settings.topic_ratings))
    want = {p: hw for p, hw in ends.items() if hw > 0}
    wait_for(lambda: asyncio.run(_committed(case.settings, case.settings.topic_ratings)) == want, 30,
             "the worker group's Kafka commits to reach the log end", interval=0.5)  # fmt: skip


def test_kill_9_mid_replay_then_restart_loses_nothing_and_counts_nothing_twice(case: StreamCase) -> None:
    rows = stream_rows(case.settings)
    first = case.worker("k1")
    case.replay("--max")
    wait_for(lambda: stats(case.redis).get("events_applied", 0) > 0, APPLY_TIMEOUT_S, "the first batch")
    first.kill9()
    assert stats(case.redis)["events_applied"] < len(rows), "too late: the worker had already finished"
    case.worker("k2")
    case.wait_applied(len(rows))
    _assert_matches_reference(case, rows)
    _assert_offsets_at_end(case)


def test_two_workers_reach_the_same_final_state(case: StreamCase) -> None:
    rows = stream_rows(case.settings)
    group = case.worker("pair", workers=2)
    wait_for(lambda: case.redis.exists("rs:worker:pair-0") and case.redis.exists("rs:worker:pair-1"), 60,
             "both workers' heartbeats")  # fmt: skip
    case.replay("--max")
    case.wait_applied(len(rows))
    _assert_matches_reference(case, rows)
    assert group.alive()


def _served_lists(url: str, users: list[int]) -> dict[int, list[int]]:
    """Each user's k=20 list, one new connection per request (several gateway processes share the port)."""
    out = {}
    with httpx.Client(base_url=url, timeout=10, headers={"Connection": "close"}) as client:
        for uid in users:
            resp = client.get(f"/recommendations/{uid}", params={"k": 20})
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["source"] == "personalised" and not body["degraded"], body
            out[uid] = [item["movie_id"] for item in body["items"]]
    return out


def test_three_workers_and_two_gateway_processes_equal_one_and_one(case: StreamCase) -> None:
    """Scale-out on one Redis: 3 workers reach the state the one-at-a-time reference gives, and a gateway of two
    processes serves every user the list a single process serves from that state."""
    rows = stream_rows(case.settings)
    group = case.worker("trio", workers=3)
    wait_for(lambda: all(case.redis.exists(f"rs:worker:trio-{i}") for i in range(3)), 90,
             "the three workers' heartbeats")  # fmt: skip
    case.replay("--max")
    case.wait_applied(len(rows))
    _assert_matches_reference(case, rows)
    assert group.alive()
    quiet = {"REELSTREAM_PROBE_INTERVAL_S": "0", "REELSTREAM_GATEWAY_LAG_INTERVAL_S": "0",
             "REELSTREAM_GATEWAY_IMPRESSIONS": "false"}  # fmt: skip  # nothing more reaches the state meanwhile
    users = sorted({uid for uid, *_ in rows})[:40]
    (case.log_dir / "two").mkdir()
    one = GatewayProcess({**case.env, **quiet}, case.log_dir)
    two = GatewayProcess({**case.env, **quiet}, case.log_dir / "two", "--workers", "2")
    try:
        one.wait_ready(timeout=120)
        two.wait_ready(timeout=120)
        wait_for(lambda: len(two.worker_processes()) == 2, 60, "two gateway processes")
        single = _served_lists(one.url, users)
        assert _served_lists(two.url, users) == single
        assert all(len(items) == 20 for items in single.values())
    finally:
        one.stop()
        two.stop()


async def _produce(settings: Settings, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def test_every_class_of_bad_event_is_dead_lettered_and_the_worker_keeps_going(case: StreamCase) -> None:
    s = case.settings
    rc, mc = codec_for("RatingEvent"), codec_for("MovieEvent")
    known = int(case.runtime.movie_ids[0])
    new_movie = 999_999_001
    ts = 1_500_000_000_000

    def rating(user: int, movie: int, r: float, t: int = ts) -> tuple[bytes, bytes]:
        return user_key(max(user, 1)), rc.encode(rating_event(user, movie, r, t, "live"))

    bad_ratings = {
        "undecodable": (b"7", b"\x00not avro at all"),
        "bad_user": rating(-3, known, 4.0),
        "rating_out_of_range": rating(7, known, 5.5),
        "not a half step": rating(7, known, 3.3),
        "bad_timestamp": rating(7, known, 4.0, t=42),
        "unknown_movie": rating(7, 123_456_789, 4.0),
    }
    case.worker("dlq")
    asyncio.run(_produce(s, s.topic_ratings, list(bad_ratings.values())))
    asyncio.run(_produce(s, s.topic_movies, [
        (b"0", mc.encode({"movie_id": 0, "title": "No id", "genres": [], "year": None, "tags": []})),
        (b"x", b"garbage"),
        (str(new_movie).encode(), mc.encode({"movie_id": new_movie, "title": "Brand New (2026)",
                                            "genres": ["Comedy"], "year": 2026, "tags": ["fresh"]})),
    ]))  # fmt: skip
    wait_for(lambda: case.redis.exists(f"rs:movie:{new_movie}"), APPLY_TIMEOUT_S, "the MovieEvent")
    # After bad data: the worker still applies good events, including one for the movie it just learned.
    asyncio.run(_produce(s, s.topic_ratings, [rating(7, known, 4.5), rating(7, new_movie, 5.0)]))
    case.wait_applied(2, dead=len(bad_ratings) + 2)

    letters = [r.value for r in asyncio.run(read_topic(s, s.topic_dead_letters, "DeadLetter", len(bad_ratings) + 2))]
    reasons = Counter(d["reason"] for d in letters)
    assert reasons == Counter({"undecodable": 2, "bad_user": 1, "rating_out_of_range": 2, "bad_timestamp": 1,
                               "unknown_movie": 1, "bad_movie_event": 1})  # fmt: skip
    originals = {d["original"] for d in letters}
    assert all(value in originals for _, value in bad_ratings.values())
    assert all(d["error"] and d["dead_at"] > 0 for d in letters)
    assert {d["topic"] for d in letters} == {s.topic_ratings, s.topic_movies}
    assert decode_rated_entry(case.redis.hget("rs:user:7:rated", str(new_movie))) == (5.0, ts)  # rating, event ts
    assert int(case.redis.hget("rs:item:" + str(new_movie), "n")) == 1
    assert case.workers[0].alive()


async def _event_ids(settings: Settings) -> Counter[str]:
    ends = await high_watermarks(settings, settings.topic_ratings)
    consumer = AIOKafkaConsumer(settings.topic_ratings, bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    ids: Counter[str] = Counter()
    codec = codec_for("RatingEvent")
    try:
        total = sum(ends.values())
        deadline = asyncio.get_running_loop().time() + 60
        while sum(ids.values()) < total and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                ids.update(codec.decode(r.value)["event_id"] for r in records)
    finally:
        await consumer.stop()
    return ids


def test_resume_after_the_broker_lost_the_topic_continues_on_the_new_log(case: StreamCase) -> None:
    """Tansu keeps topics in memory: after `infra down`/`up` a checkpoint names records the topic lost.

    Redis kept what the worker applied of the lost log, so the replay does not start over (sending events
    0.. again would cost a re-read of everything): it goes on from the checkpoint's ``next`` minus the resend
    window (events the lost log acknowledged lately, which the worker may not have read; it skips copies of
    what it applied), every event from there on is sent once, and what the new log already holds is not
    sent again. Older events of the lost log are not sent again."""
    rows = stream_rows(case.settings, 3000)
    ids = [rating_event(u, m, r, ts * 1000, "replay")["event_id"] for u, m, r, ts in rows]
    case.replay("--limit", "1000")  # what the "new" topic holds
    path = case.settings.replay_checkpoint
    doc = read_checkpoint(path)
    lost = {p: o + 10_000 for p, o in doc["offsets"].items()}  # acknowledged by the broker that was lost
    window = case.settings.resend_window_s
    t = doc["recent"][-1][0]  # 1000..1999 went to the lost log only; 1500.. within the window before the end:
    recent = [[t - 2 * window, 1200], [t - window / 2, 1500], [t, 2000]]
    path.write_text(json.dumps({**doc, "next": 2000, "offsets": lost, "recent": recent}))
    result = case.replay("--resume", "--limit", "3000")
    assert "continuing from index 1,500 on the new log" in result.stdout
    assert "replayed 1,500 events (indexes 1,500..3,000, 0 already in the topic)" in result.stdout
    assert asyncio.run(_event_ids(case.settings)) == Counter(ids[:1000] + ids[1500:])  # each exactly once


def test_resumed_replay_neither_skips_nor_duplicates(case: StreamCase) -> None:
    limit = 6000
    expected = Counter(rating_event(u, m, r, ts * 1000, "replay")["event_id"]
                       for u, m, r, ts in stream_rows(case.settings, limit))  # fmt: skip
    # 1. A replay killed with -9 part-way: its checkpoint lags what the broker holds.
    argv = [sys.executable, "-m", "reelstream.shell.cli", "replay", "--rate", "4000", "--limit", str(limit)]
    proc = subprocess.Popen(argv, env=case.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = case.settings.replay_checkpoint
    wait_for(lambda: (read_checkpoint(path) or {}).get("next", 0) > 1000, 60, "the replay's checkpoint to move")
    proc.kill()
    proc.wait(timeout=10)
    doc = read_checkpoint(path)
    assert 0 < doc["next"] < limit
    result = case.replay("--resume", "--limit", str(limit))
    assert f"indexes {doc['next']:,}..{limit:,}" in result.stdout
    ids = asyncio.run(_event_ids(case.settings))
    assert ids == expected  # every event exactly once
    # 2. The worst case: a checkpoint from the very start (nothing acknowledged yet) although all was sent.
    doc = read_checkpoint(path)
    path.write_text(json.dumps({**doc, "next": 0, "offsets": {p: -1 for p in doc["offsets"]}}))
    again = case.replay("--resume", "--limit", str(limit))
    assert f"replayed 0 events (indexes 0..{limit:,}, {limit:,} already in the topic)" in again.stdout
    assert asyncio.run(_event_ids(case.settings)) == expected


def test_ratings_are_attributed_to_served_lists_exactly_once_across_a_worker_kill(case: StreamCase) -> None:
    """Impressions and ratings through the real broker and worker, a rating arriving before the list it
    follows, a kill -9 between the halves: the arm counters equal the ones worked out by hand."""
    import math

    from streams.producer import EventProducer

    s, day, t0 = case.settings, 86_400_000, 1_500_000_000_000
    m = [int(x) for x in case.runtime.movie_ids[:20]]
    codec = codec_for("ImpressionEvent")

    def impression(iid: str, user: int, mids: list[int], variant: str) -> bytes:
        return codec.encode({"impression_id": iid, "user_id": user, "movie_ids": mids, "variant": variant,
                             "segment": "new", "model_version": "m", "rules_version": "r", "source": "personalised",
                             "cached": False, "degraded": False, "exploration": "none", "served_ms": t0,
                             "clock": "event"})  # fmt: skip

    async def produce(imps: list[tuple[str, int, list[int], str]], ratings: list[tuple[int, int, float, int]]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for iid, user, mids, variant in imps:
                await producer.send_and_wait(s.topic_impressions, impression(iid, user, mids, variant),
                                             key=user_key(user))  # fmt: skip
        finally:
            await producer.stop()
        async with EventProducer(s) as events:
            for user, movie, stars, ts in ratings:
                await events.send(user, movie, stars, source="replay", ts_ms=ts, known_movie=lambda _: True)

    first = case.worker("a1")
    # user 2 rates m[12] three days after being served it, but the rating is read before the list
    asyncio.run(produce([("a", 1, m[0:6], "control")], [(2, m[12], 5.0, t0 + 3 * day)]))
    wait_for(lambda: stats(case.redis).get("impressions_applied", 0) == 1 and stats(case.redis).get(
        "events_applied", 0) == 1, APPLY_TIMEOUT_S, "the first half applied")  # fmt: skip
    first.kill9()
    asyncio.run(
        produce([("b", 2, m[10:13], "diverse")], [(1, m[2], 4.5, t0 + 2 * day), (1, m[5], 3.0, t0 + 8 * day)])
    )  # m[5]: past the window
    case.worker("a2")
    wait_for(lambda: stats(case.redis).get("impressions_applied", 0) == 2 and stats(case.redis).get(
        "events_applied", 0) == 3, APPLY_TIMEOUT_S, "everything applied")  # fmt: skip
    got = {k.decode(): float(v) for k, v in case.redis.hgetall("rs:exp:control:new").items()}
    assert got == {"impressions": 1, "users": 1, "hits": 1, "hit_lists_20": 1, "hits_5": 1, "hits_10": 1, "hits_20": 1,
                   "dcg_20": pytest.approx(1 / math.log2(4)), "hit_rating_sum": 4.5}  # fmt: skip
    got = {k.decode(): float(v) for k, v in case.redis.hgetall("rs:exp:diverse:new").items()}
    assert got == {"impressions": 1, "users": 1, "hits": 1, "hit_lists_20": 1, "hits_5": 1, "hits_10": 1, "hits_20": 1,
                   "dcg_20": pytest.approx(1 / math.log2(4)), "hit_rating_sum": 5.0}  # fmt: skip
    assert case.redis.smembers("rs:exp:arms") == {b"control:new", b"diverse:new"}
