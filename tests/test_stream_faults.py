"""Faults under a running worker, on a broker and a Redis of this module's own (the tests kill and restart them).

- A broker restarted with an empty log (Tansu keeps its log in memory; on Apache Kafka a topic deleted and
  created again): the new log's records land at offsets the old fence covers, and must be applied anyway,
  exactly once, with the reset counted and shown by the lag monitor (the RESET verdict).
- Redis killed with -9 (AOF, fsync every second) while events keep coming: the worker reports itself
  degraded on ``/health`` and stays alive; once Redis is back every event is applied exactly once.

The oracle is the Python reference (:func:`tests.stream_support.reference_state`: the same processor on a dict
store, fed every produced event once, in order).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from monitoring.lag import LagMonitor, recorded_resets
from reelstream.settings import Settings
from reelstream.shell import local_services
from schemas import redis_keys as keys
from schemas.wire import codec_for
from streams.admin import ensure_topics_sync
from streams.events import rating_event, user_key
from streams.producer import EventProducer
from streams.store import redis_snapshot
from tests.stream_support import (
    StreamCase,
    WorkerProcess,
    diff_states,
    open_case,
    reference_state,
    stats,
    store_and_model,
    wait_for,
)

APPLY_TIMEOUT_S = 120
#: How long Redis stays down under the worker (several retries of its backoff).
OUTAGE_S = 3.0
HOST = "127.0.0.1"

Row = tuple[int, int, float, int]  #: user, movie, rating, event time (s)


@dataclass
class Pair:
    """This module's broker and Redis: addresses, and kill -9 / start again on the same port (and Redis dir)."""

    run_dir: Path
    kafka_port: int
    redis_port: int

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{HOST}:{self.redis_port}/0"

    def kill9(self, name: str) -> None:
        pid = local_services.running_pid(self.run_dir, name)
        assert pid is not None, f"{name} is not running"
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: local_services.running_pid(self.run_dir, name) is None, 30, f"{name} (pid {pid}) to die")

    def start_broker(self) -> None:
        local_services.start_broker(self.run_dir, HOST, self.kafka_port)

    def start_redis(self) -> None:
        local_services.start_redis(
            self.run_dir, HOST, self.redis_port
        )  # AOF, fsync every second (local_services.start_redis)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(tmp_path_factory.mktemp("faults"), local_services.free_port(), local_services.free_port())
    p.start_broker()
    try:
        p.start_redis()
        yield p
    finally:
        local_services.stop_process(p.run_dir, "broker")
        local_services.stop_process(p.run_dir, "redis")


@pytest.fixture
def case(
    pair: Pair, settings: Settings, built_var: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[StreamCase]:  # fmt: skip
    monkeypatch.setenv("KAFKA_BOOTSTRAP", pair.kafka_bootstrap)
    monkeypatch.setenv("REDIS_URL", pair.redis_url)
    tag = request.node.name[5:20].replace("_", "-")
    settings, names, runtime = store_and_model(monkeypatch, built_var / "store", tag)
    env = {**os.environ, "KAFKA_BOOTSTRAP": pair.kafka_bootstrap, "REDIS_URL": pair.redis_url,
           "REELSTREAM_VAR_DIR": str(settings.var_dir), **names}  # fmt: skip
    with open_case(StreamCase, settings, env, runtime, tmp_path) as c:
        c.redis.flushdb()
        yield c


def _rows(case: StreamCase, users: list[int], n: int, t0: int) -> list[Row]:
    """``n`` ratings of ``users`` in turn, one second apart in event time from ``t0`` (recent: valid)."""
    movies = [int(m) for m in case.runtime.movie_ids[:50]]
    return [(users[i % len(users)], movies[(7 * i) % len(movies)], float(1 + i % 9) / 2, t0 + i) for i in range(n)]


def _produce(settings: Settings, rows: list[Row]) -> None:
    """Send ``rows`` as rating events keyed by user and wait for every acknowledgement."""
    codec = codec_for("RatingEvent")

    async def main() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            topic, encode = settings.topic_ratings, codec.encode
            futures = [
                await producer.send(topic, encode(rating_event(u, m, r, ts * 1000, "replay")), key=user_key(u))
                for u, m, r, ts in rows
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(main())


def _wait_applied(case: StreamCase, n: int) -> None:
    def done() -> bool:
        for w in case.workers:
            assert w.alive(), f"worker {w.name} died:\n{w.tail()}"
        try:
            return stats(case.redis).get("events_applied", 0) >= n
        except OSError:
            return False

    try:
        wait_for(done, APPLY_TIMEOUT_S, f"{n} events applied")
    except AssertionError:
        raise AssertionError(f"stats {stats(case.redis)}\n" + "\n".join(w.tail() for w in case.workers)) from None


def _assert_exactly_once(case: StreamCase, rows: list[Row]) -> None:
    problems = diff_states(reference_state(case.settings, case.runtime, rows), redis_snapshot(case.redis))
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
    assert stats(case.redis)["events_applied"] == len(rows)


def _health(w: WorkerProcess) -> tuple[int, dict] | None:
    port = int(w.proc.args[w.proc.args.index("--web-port") + 1])  # type: ignore[union-attr]
    try:
        r = httpx.get(f"http://{HOST}:{port}/health", timeout=2.0)
    except httpx.HTTPError:
        return None
    return r.status_code, r.json()


def test_redis_killed_under_a_running_worker_is_ridden_out_and_nothing_is_lost_or_doubled(
    case: StreamCase, pair: Pair
) -> None:
    now = int(time.time())
    users = [11, 12, 13, 14, 15, 16]
    before, during = _rows(case, users, 30, now - 600), _rows(case, users, 30, now - 300)
    w = case.worker("w1")
    _produce(case.settings, before)
    _wait_applied(case, len(before))
    wait_for(lambda: (_health(w) or (0, {}))[0] == 200, 60, "the worker's /health to answer ok")

    pair.kill9("redis")
    _produce(case.settings, during)  # the broker takes them; the worker cannot apply them now

    def degraded_for(seconds: float) -> bool:
        h = _health(w)
        if h is None or h[0] != 503 or "redis" not in h[1]["down"]:
            return False
        return time.time() - h[1]["down"]["redis"]["since_ms"] / 1000.0 >= seconds

    # down long enough for several retries (capped backoff), the worker answering /health all along
    wait_for(lambda: degraded_for(OUTAGE_S), 60, f"the worker's /health to say Redis is down for {OUTAGE_S} s")
    _status, body = _health(w) or (0, {})
    assert body["status"] == "degraded" and body["down"]["redis"]["since_ms"] > 0, body
    assert w.alive(), f"the worker died with Redis:\n{w.tail()}"

    pair.start_redis()  # same port, same dir: the AOF comes back (less, at most, its last second)
    wait_for(lambda: (_health(w) or (0, {}))[0] == 200, 60, "the worker's /health to be ok again")
    _wait_applied(case, len(before) + len(during))
    _assert_exactly_once(case, before + during)
    assert w.alive()
    log = w.tail()
    assert log.count("redis unreachable") == 1, f"one warning per outage:\n{log}"


def test_broker_restarted_with_an_empty_log_applies_the_new_events_once_and_counts_the_reset(
    case: StreamCase, pair: Pair
) -> None:
    now = int(time.time())
    user = 21  # one user: every event on one partition, whose fence the new log's offsets fall under
    old, new = _rows(case, [user], 32, now - 900), _rows(case, [user], 2, now - 100)
    w = case.worker("w1")
    _produce(case.settings, old)
    _wait_applied(case, len(old))
    partition = next(int(p) for p in case.redis.hgetall(keys.offsets(case.settings.topic_ratings)))
    assert int(case.redis.hget(keys.offsets(case.settings.topic_ratings), partition)) == len(old) - 1

    pair.kill9("broker")
    pair.start_broker()  # same port, empty memory log: offsets start at 0 again
    ensure_topics_sync(case.settings)
    _produce(case.settings, new)  # offsets 0 and 1, under the fence at 31
    _wait_applied(case, len(old) + len(new))
    _assert_exactly_once(case, old + new)

    s = stats(case.redis)
    assert s["log_resets"] == 1 and s.get("events_lost", 0) == 0, s  # the old log was applied in full
    record = json.loads(case.redis.hget(keys.resets(case.settings.topic_ratings), partition))
    assert (record["reason"], record["old_offset"], record["epoch"]) == ("log_shorter", len(old) - 1, 1), record
    assert "log reset on" in w.tail() and w.alive()

    async def lag() -> tuple[str, dict[int, str]]:
        topics = (case.settings.topic_ratings, case.settings.topic_movies)
        async with LagMonitor(case.settings.kafka_bootstrap, case.settings.app_id, topics,
                              resets=recorded_resets(case.settings.redis_url, topics)) as monitor:  # fmt: skip
            sample = await monitor.sample()
        ratings = {p.partition: p.verdict for p in sample.partitions if p.topic == case.settings.topic_ratings}
        return sample.verdict, ratings

    group, verdicts = asyncio.run(lag())
    assert group == "RESET" and verdicts[partition] == "RESET", verdicts
    assert {v for p, v in verdicts.items() if p != partition} <= {"OK"}


def test_ratings_a_dying_broker_acknowledged_but_nobody_read_are_sent_again_and_applied_once(
    case: StreamCase, pair: Pair
) -> None:
    """The memory-only broker's unpreventable loss, prevented by the producer (streams/resend.py): events it
    acknowledged within the resend window are sent again to the restarted broker; the worker skips the copies
    of those it had applied (their identity) and applies the others once."""
    now = int(time.time())
    user = 22
    applied, unread = _rows(case, [user], 3, now - 900), _rows(case, [user], 2, now - 100)
    known = case.runtime.index_of.__contains__

    async def main() -> int:
        async with EventProducer(case.settings) as producer:
            w = case.worker("w1")
            for u, m, r, ts in applied:
                await producer.send(u, m, r, ts_ms=ts * 1000, known_movie=known)
            await asyncio.to_thread(_wait_applied, case, len(applied))
            await asyncio.to_thread(w.stop)  # nobody reads the next two: only the broker holds them ...
            case.workers.remove(w)
            for u, m, r, ts in unread:
                await producer.send(u, m, r, ts_ms=ts * 1000, known_movie=known)
            await asyncio.to_thread(pair.kill9, "broker")  # ... and it dies with them
            await asyncio.to_thread(pair.start_broker)
            await asyncio.to_thread(ensure_topics_sync, case.settings)
            deadline = time.monotonic() + APPLY_TIMEOUT_S
            while producer.resent < len(applied) + len(unread):  # a condition with a deadline, not a fixed wait
                assert time.monotonic() < deadline, f"resent {producer.resent}"
                await asyncio.sleep(0.05)
            return producer.resent

    assert asyncio.run(main()) == 5
    case.worker("w2")
    _wait_applied(case, len(applied) + len(unread))
    _assert_exactly_once(case, applied + unread)
    assert stats(case.redis)["duplicates_skipped"] >= len(applied)


def test_a_producer_reaching_a_restarted_broker_first_does_not_create_the_topic(case: StreamCase, pair: Pair) -> None:
    """aiokafka asks every Metadata request to auto-create its topics, and Tansu would create them with 4
    partitions: users would move to other partitions. No client of ours creates a topic (streams.broker_watch);
    the topics come back from ensure_topics, with settings.topic_partitions."""
    pair.kill9("broker")
    pair.start_broker()  # empty: no topics at all
    topic = case.settings.topic_ratings

    async def main() -> set[str]:
        producer = AIOKafkaProducer(bootstrap_servers=case.settings.kafka_bootstrap, request_timeout_ms=3000)
        await producer.start()
        try:
            with pytest.raises(KafkaError):  # no metadata for a topic that does not exist: refused, not created
                await producer.send_and_wait(topic, b"x", key=b"1")
        finally:
            await producer.stop()
        admin = AIOKafkaAdminClient(bootstrap_servers=case.settings.kafka_bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    assert topic not in asyncio.run(main())
    statuses = {s.name: s for s in ensure_topics_sync(case.settings)}
    assert statuses[topic].created and statuses[topic].partitions == case.settings.topic_partitions


def test_experiment_counters_through_a_worker_kill_and_a_redis_kill_equal_a_clean_runs(
    case: StreamCase, pair: Pair
) -> None:
    """Served lists and the ratings after them, a third at a time: a worker killed with -9 after the first
    third, Redis killed with -9 (its AOF fsyncs once a second) while the worker applies the second. The
    ``rs:exp:*`` counters equal those of a clean run: the same messages through the processors into the dict
    twin of the Lua script (tests/test_attribution.py checks that twin against hand-worked counts)."""
    from streams.online import OnlineRatingModel
    from streams.processor import ImpressionProcessor, RatingProcessor
    from streams.store import MemoryFeatureTables
    from tests.test_attribution import DAY_MS, _impression, _rating

    s, rng = case.settings, random.Random(5)
    movies = [int(m) for m in case.runtime.movie_ids[:60]]
    t0 = (int(time.time()) - 12 * 86_400) * 1000
    imps, rates = [], []
    for u in range(31, 43):
        for j in range(3):
            imps.append((int(t0 + (3 * j + rng.random()) * DAY_MS), u, f"i{u}-{j}", rng.sample(movies, 12),
                         rng.choice(["control", "diverse"])))  # fmt: skip
        rates += [(int(t0 + rng.random() * 12 * DAY_MS), u, m, rng.choice([2.0, 3.5, 4.0, 5.0]))
                  for m in rng.sample(movies, 8)]  # fmt: skip
    imp_msgs = [_impression(i, iid, u, mids, ts, variant) for i, (ts, u, iid, mids, variant) in enumerate(sorted(imps))]
    rate_msgs = [_rating(i, u, m, stars, ts) for i, (ts, u, m, stars) in enumerate(sorted(rates))]

    twin = MemoryFeatureTables()
    ratings = RatingProcessor(case.runtime, twin, topic="r", min_ts_ms=0, max_future_ms=10**15, half_life_s=3600.0,
                              online=OnlineRatingModel(seed=1))  # fmt: skip
    impressions = ImpressionProcessor(twin, topic="i")
    impressions.commit(impressions.plan(imp_msgs))
    ratings.run(rate_msgs)
    clean = {k: v for k, v in twin.snapshot().items() if k.startswith("rs:exp:")}
    assert sum(float(v["hits"]) for k, v in clean.items() if isinstance(v, dict) and "hits" in v) > 20

    def third(msgs: list, k: int) -> list:
        return msgs[k * len(msgs) // 3 : (k + 1) * len(msgs) // 3]

    def produce(k: int) -> None:
        async def main() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
            await producer.start()
            try:
                sends = [await producer.send(s.topic_impressions, m.value, key=m.key) for m in third(imp_msgs, k)]
                sends += [await producer.send(s.topic_ratings, m.value, key=m.key) for m in third(rate_msgs, k)]
                await asyncio.gather(*sends)
            finally:
                await producer.stop()

        asyncio.run(main())

    def applied(n_imps: int, n_rates: int) -> Callable[[], bool]:
        def check() -> bool:
            try:
                got = stats(case.redis)
            except OSError:
                return False
            return got.get("impressions_applied", 0) >= n_imps and got.get("events_applied", 0) >= n_rates

        return check

    first = case.worker("e1")
    produce(0)
    wait_for(applied(len(imp_msgs) // 3, len(rate_msgs) // 3), APPLY_TIMEOUT_S, "the first third applied")
    first.kill9()
    case.worker("e2")
    produce(1)
    wait_for(lambda: stats(case.redis).get("impressions_applied", 0) > 12, APPLY_TIMEOUT_S, "the second third begun")
    pair.kill9("redis")
    pair.start_redis()
    produce(2)
    wait_for(applied(len(imp_msgs), len(rate_msgs)), APPLY_TIMEOUT_S, "everything applied")
    got = {k: v for k, v in redis_snapshot(case.redis).items() if k.startswith("rs:exp:")}
    assert diff_states(clean, got) == []
