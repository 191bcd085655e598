"""The rating contract (schemas/ratings.py) end to end: real broker, Redis, worker and gateway processes.

* A foreign producer (librdkafka through confluent-kafka, the documented wire format written with fastavro)
  whose Kafka key is not the user id: a ``key_mismatch`` dead letter, the user's state unchanged; the same
  producer with the right key is applied.
* 202 means applied: a table of edge cases through ``POST /ratings`` and ``reelstream rate``. Every accepted
  rating is applied by the worker (its state shows it, no dead letter); every refusal is a 4xx (exit 2 for
  ``rate``) and nothing reaches the topic for it.

The worker starts from HISTORY (users up to 610 of the bundled dataset), so the users here are new ids.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import fastavro
import httpx
from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer

from reelstream.settings import PROJECT_ROOT, Settings
from schemas import redis_keys as keys
from schemas.ratings import RatingLimits, rating_verdict, user_key
from schemas.user_record import decode_rated
from schemas.wire import codec_for
from streams.admin import high_watermarks
from tests.live_system import GatewayProcess, Live
from tests.stream_support import read_topic, wait_for

APPLY_TIMEOUT_S = 60
#: User ids beyond the bundled dataset's (1..610): they start without state.
NEW = 700_000

# --------------------------------------------------------------------------- a foreign producer

#: What a foreign client has: the schema file and docs/events.md's wire format (magic 0xA7, version, Avro).
SCHEMA_DOC = json.loads((PROJECT_ROOT / "schemas" / "rating_event.avsc").read_text())
SCHEMA = fastavro.parse_schema(SCHEMA_DOC)


def foreign_value(event: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(bytes((0xA7, SCHEMA_DOC["version"])))
    fastavro.schemaless_writer(buf, SCHEMA, event)
    return buf.getvalue()


def foreign_produce(settings: Settings, items: list[tuple[bytes | None, bytes]]) -> None:
    """librdkafka, with Java's (and aiokafka's) murmur2 partitioner so a right key finds the user's partition."""
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random", "acks": "all"})
    failures: list[Any] = []
    for key, value in items:
        producer.produce(settings.topic_ratings, value=value, key=key,
                         on_delivery=lambda err, _msg: failures.append(err) if err else None)  # fmt: skip
    assert producer.flush(30) == 0 and failures == []


def user_rows(live: Live, uid: int) -> tuple[dict, dict, list]:
    r = live.redis
    return r.hgetall(keys.user(uid)), r.hgetall(keys.user_rated(uid)), r.lrange(keys.user_recent(uid), 0, -1)


def rated(live: Live, uid: int) -> dict[int, float]:
    return decode_rated(live.redis.hgetall(keys.user_rated(uid)))


def test_a_foreign_rating_keyed_other_than_its_user_is_dead_lettered(live: Live) -> None:
    s = live.settings
    live.worker("foreign")
    uid = NEW + 42
    m = [int(x) for x in live.runtime.movie_ids[:4]]

    def event(movie: int, rating: float) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "user_id": uid, "movie_id": movie, "rating": rating,
                "event_ts": int(time.time() * 1000), "source": "live"}  # fmt: skip

    foreign_produce(s, [(user_key(uid), foreign_value(event(m[0], 4.0)))])
    wait_for(lambda: rated(live, uid) == {m[0]: 4.0}, APPLY_TIMEOUT_S, "the rightly keyed rating applied")
    before = user_rows(live, uid)

    wrong = [(user_key(uid + 1), foreign_value(event(m[1], 2.0))), (None, foreign_value(event(m[2], 1.0)))]
    foreign_produce(s, wrong)
    wait_for(lambda: topic_end(s, s.topic_dead_letters) >= 2, APPLY_TIMEOUT_S, "two dead letters")
    letters = [r.value for r in asyncio.run(read_topic(s, s.topic_dead_letters, "DeadLetter", 2))]
    assert sorted((d["original"], d["reason"]) for d in letters) == sorted((v, "key_mismatch") for _, v in wrong)
    assert all(d["topic"] == s.topic_ratings and f"expected {user_key(uid)!r}" in d["error"] for d in letters)
    assert user_rows(live, uid) == before  # neither was applied

    foreign_produce(s, [(user_key(uid), foreign_value(event(m[3], 4.5)))])
    wait_for(lambda: rated(live, uid) == {m[0]: 4.0, m[3]: 4.5}, APPLY_TIMEOUT_S, "the right key applied again")
    assert int(live.redis.hget(keys.user(uid), "version")) == 2
    assert topic_end(s, s.topic_dead_letters) == 2 and live.workers[0].alive()


# --------------------------------------------------------------------------- 202 means applied


def topic_end(settings: Settings, topic: str) -> int:
    """Messages ``topic`` holds (the fetch high watermarks, docs/events.md)."""
    return sum(asyncio.run(high_watermarks(settings, topic)).values())


def ratings_end(settings: Settings) -> int:
    return topic_end(settings, settings.topic_ratings)


def applied_once(live: Live, expected: list[tuple[int, int, float]]) -> bool:
    """Each (new) user's state holds exactly its one rating."""
    return all(
        rated(live, uid) == {mid: r} and live.redis.hget(keys.user(uid), "version") == b"1" for uid, mid, r in expected
    )


async def announce(settings: Settings, movie_id: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        value = codec_for("MovieEvent").encode(
            {"movie_id": movie_id, "title": "Announced (2026)", "genres": ["Comedy"], "year": 2026, "tags": []}
        )
        await producer.send_and_wait(settings.topic_movies, value, key=str(movie_id).encode())
    finally:
        await producer.stop()


def rate_cli(live: Live, *args: object) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "reelstream.shell.cli", "rate", *map(str, args)]
    return subprocess.run(argv, env=live.env, capture_output=True, text=True, timeout=120)


def test_a_202_means_the_worker_applies_the_rating(live: Live) -> None:
    s = live.settings
    live.worker("contract")
    announced = 999_999_123
    asyncio.run(announce(s, announced))
    wait_for(lambda: live.redis.exists(keys.movie(announced)), APPLY_TIMEOUT_S, "the MovieEvent applied")
    # Started after the announcement, so the gateway's first catalogue refresh has the movie. No probes: only
    # this test's ratings reach the topic.
    gateway = GatewayProcess({**live.env, "REELSTREAM_PROBE_INTERVAL_S": "0"}, live.log_dir)
    try:
        gateway.wait_ready()
        wait_for(lambda: httpx.get(f"{gateway.url}/movies/{announced}", timeout=5).status_code == 200, 60,
                 "the gateway's catalogue to hold the announced movie")  # fmt: skip
        _post_table(live, gateway.url, announced)
        _rate_table(live, announced)
        assert gateway.proc.poll() is None
    finally:
        gateway.stop()


def _post_table(live: Live, url: str, announced: int) -> None:
    s = live.settings
    m = [int(x) for x in live.runtime.movie_ids[:8]]
    now = int(time.time() * 1000)
    lo, ahead, base = s.event_min_ts_ms, s.event_max_future_ms, s.probe_user_base
    # (user, movie, rating, event_ts or None: now, the field a refusal names or None: accepted)
    cases = [
        (NEW + 101, m[0], 0.5, None, None),  # the lowest rating
        (NEW + 102, m[1], 5.0, None, None),  # the highest
        (NEW + 103, m[2], 2.5, None, None),  # a half step
        (NEW + 104, m[3], 4.0, lo, None),  # at the earliest time
        (NEW + 105, m[4], 4.0, now + ahead - 600_000, None),  # just inside the tolerated future
        (NEW + 106, announced, 4.5, None, None),  # a movie announced by a MovieEvent
        (base - 1, m[5], 3.0, None, None),  # the highest id a person may have
        (NEW + 201, m[0], 0.0, None, "rating"),
        (NEW + 202, m[0], 5.5, None, "rating"),
        (NEW + 203, m[0], 3.25, None, "rating"),  # not a half step
        (NEW + 204, m[0], 4.0, lo - 1, "event_ts"),  # just before the earliest time
        (NEW + 205, m[0], 4.0, now + 2 * ahead, "event_ts"),  # far in the future
        (NEW + 206, 987_654_321, 4.0, None, "movie_id"),  # never announced
        (base, m[0], 4.0, None, "user_id"),  # reserved for probes
        (base + 3, m[0], 4.0, None, "user_id"),
        (0, m[0], 4.0, None, "user_id"),
    ]
    catalogue = {*live.runtime.movie_ids.tolist(), announced}
    limits = RatingLimits.from_settings(s)
    for uid, mid, r, ts, field in cases:  # the table agrees with the contract itself
        event = {"user_id": uid, "movie_id": mid, "rating": r, "event_ts": now if ts is None else ts, "source": "api"}
        verdict = rating_verdict(event, user_key(uid), now_ms=now, limits=limits, known_movie=catalogue.__contains__)
        assert (verdict is None) == (field is None), (uid, verdict)

    def post(uid: int, mid: int, r: float, ts: int | None) -> httpx.Response:
        body = {"user_id": uid, "movie_id": mid, "rating": r} | ({} if ts is None else {"event_ts": ts})
        return httpx.post(f"{url}/ratings", json=body, timeout=30)

    start = ratings_end(s)
    for uid, mid, r, ts, field in (c for c in cases if c[4] is not None):
        resp = post(uid, mid, r, ts)
        assert 400 <= resp.status_code < 500, (uid, resp.status_code, resp.text)
        assert field in [e["loc"][-1] for e in resp.json()["detail"]], resp.text
    assert ratings_end(s) == start  # nothing reached the topic for a refusal

    accepted = [c for c in cases if c[4] is None]
    for uid, mid, r, ts, _ in accepted:
        resp = post(uid, mid, r, ts)
        assert resp.status_code == 202, (uid, resp.text)
    assert ratings_end(s) == start + len(accepted)

    expected = [(uid, mid, r) for uid, mid, r, _, _ in accepted]
    wait_for(lambda: applied_once(live, expected), APPLY_TIMEOUT_S, "every accepted rating applied")
    assert topic_end(s, s.topic_dead_letters) == 0  # the worker refused none of what the gateway accepted
    for uid, *_ in (c for c in cases if c[4] is not None):
        assert not live.redis.exists(keys.user(uid))
    assert int(live.redis.hget(keys.user(NEW + 104), "last_ms")) == lo


def _rate_table(live: Live, announced: int) -> None:
    s = live.settings
    m = [int(x) for x in live.runtime.movie_ids[:8]]
    start = ratings_end(s)
    refused = [
        ((NEW + 303, 987_654_321, 4.0), "unknown_movie"),
        ((s.probe_user_base, m[0], 3.0), "reserved_user"),
        ((NEW + 304, m[0], 3.3), "rating_out_of_range"),
        ((0, m[0], 3.0), "bad_user"),
    ]
    for args, reason in refused:
        out = rate_cli(live, *args)
        assert out.returncode == 2 and reason in out.stderr, (args, out.returncode, out.stdout, out.stderr)
    assert ratings_end(s) == start

    accepted = [(NEW + 301, m[6], 4.5), (NEW + 302, announced, 3.5)]  # the announced movie: found in rs:movie:{mid}
    for args in accepted:
        out = rate_cli(live, *args)
        assert out.returncode == 0, out.stderr
        assert uuid.UUID(out.stdout.strip())  # the event id
    assert ratings_end(s) == start + len(accepted)
    wait_for(lambda: applied_once(live, accepted), APPLY_TIMEOUT_S, "the rated events applied")
    assert topic_end(s, s.topic_dead_letters) == 0
