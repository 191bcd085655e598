"""``reelstream archive`` against the real broker and Redis: every record in the Parquet segments exactly once.

Each test has its own topics, group and var folder on the session's broker. The oracle is the broker itself:
the topics are read back from their beginning and the archive must hold exactly those records (same
partition, offset, key, value and timestamp), each once, whatever was killed in between.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from reelstream.settings import Settings
from reelstream.shell import local_services
from schemas import redis_keys as keys
from schemas.wire import codec_for
from streams.admin import ensure_topics_sync, high_watermarks
from streams.archive import (
    ArchivedRecord,
    archive_tip,
    list_segments,
    read_segments,
    remove_partial_segments,
    write_segment,
)
from streams.events import rating_event, user_key
from streams.log_identity import fingerprint
from tests.stream_support import ArchiverProcess, apply_env, unique_stream_env, wait_for

ARCHIVE_TIMEOUT_S = 90
#: (topic, partition, offset, key, value, timestamp_ms): one record as the broker and the archive hold it.
Row = tuple[str, int, int, bytes | None, bytes, int]


@dataclass
class Case:
    settings: Settings
    env: dict[str, str]
    redis: redis.Redis
    log_dir: Path
    archivers: list[ArchiverProcess]

    def archiver(self) -> ArchiverProcess:
        a = ArchiverProcess(self.env, self.log_dir / f"archive-{len(self.archivers)}.log")
        self.archivers.append(a)
        return a

    def produce(self, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
        asyncio.run(_produce(self.settings, topic, items))

    def broker_rows(self) -> list[Row]:
        return asyncio.run(_read_topics(self.settings))

    def archived_rows(self, epoch: int | None = None) -> list[Row]:
        """Every row of every segment file, as written (no deduplication: duplicates must show)."""
        rows: list[Row] = []
        for topic in (self.settings.topic_ratings, self.settings.topic_movies):
            for p in range(self.settings.topic_partitions):
                for seg in list_segments(self.settings.archive_dir, topic, p):
                    if epoch is not None and seg.epoch != epoch:
                        continue
                    frame = pl.read_parquet(seg.path)
                    assert set(frame["partition"].to_list()) == {p} and set(frame["epoch"].to_list()) == {seg.epoch}
                    assert frame["offset"].to_list() == list(range(seg.first, seg.last + 1))
                    rows += [(topic, p, o, k, v, t) for o, k, v, t in
                             frame.select("offset", "key", "value", "timestamp_ms").iter_rows()]  # fmt: skip
        return rows

    def wait_archived(self, n: int, epoch: int | None = None) -> None:
        def done() -> bool:
            for a in self.archivers:
                assert a.alive() or a.proc.returncode == -9, f"archiver died:\n{a.tail()}"
            return len(self.archived_rows(epoch)) >= n

        wait_for(done, ARCHIVE_TIMEOUT_S, f"{n} records archived", interval=0.2)

    def status(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(keys.ARCHIVE).items()}


@pytest.fixture
def case(
    live_settings: Settings, subprocess_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Case]:  # fmt: skip
    names = unique_stream_env(request.node.name[5:20].replace("_", "-")) | {
        "REELSTREAM_TOPIC_PARTITIONS": "3", "REELSTREAM_ARCHIVE_SEGMENT_AGE_S": "0.3",
        "REELSTREAM_ARCHIVE_STATUS_INTERVAL_S": "0.2",
    }  # fmt: skip
    settings = apply_env(monkeypatch, names)
    ensure_topics_sync(settings)
    client = redis.Redis.from_url(settings.redis_url)
    c = Case(settings, {**subprocess_env, **names}, client, tmp_path, [])
    try:
        yield c
    finally:
        for a in c.archivers:
            a.stop()
        client.close()


async def _produce(settings: Settings, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _read_topics(settings: Settings) -> list[Row]:
    """Everything the ratings and movies topics hold, read from their beginning to the fetch high watermark."""
    rows: list[Row] = []
    for topic in (settings.topic_ratings, settings.topic_movies):
        ends = await high_watermarks(settings, topic)
        if not any(ends.values()):
            continue
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")  # fmt: skip
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p, hw in ends.items() if hw > 0]
            consumer.assign(tps)
            for tp in tps:
                await consumer.seek_to_beginning(tp)
            todo = {tp: ends[tp.partition] for tp in tps}
            deadline = asyncio.get_running_loop().time() + 60
            while todo and asyncio.get_running_loop().time() < deadline:
                for records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).values():
                    rows += [(topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in records]
                for tp in list(todo):
                    if await consumer.position(tp) >= todo[tp]:
                        del todo[tp]
            assert not todo, f"could not read {topic} to its end"
        finally:
            await consumer.stop()
    return rows


def _ratings(first: int, n: int) -> list[tuple[bytes | None, bytes]]:
    """``n`` records for the ratings topic: valid events keyed by user, and some a worker would refuse."""
    codec = codec_for("RatingEvent")
    items: list[tuple[bytes | None, bytes]] = []
    for i in range(first, first + n):
        user = 1 + i % 17
        if i % 50 == 7:
            items.append((user_key(user), b"\x00 not avro"))  # archived raw: the rebuild re-validates
        elif i % 50 == 8:
            items.append((None, codec.encode(rating_event(user, 1, 4.0, 1_500_000_000_000 + i, "live"))))
        else:
            items.append((user_key(user), codec.encode(rating_event(user, 1 + i % 5, 3.5, 1_500_000_000_000 + i,
                                                                    "live"))))  # fmt: skip
    return items


def _movies(n: int) -> list[tuple[bytes | None, bytes]]:
    codec = codec_for("MovieEvent")
    return [
        (str(900_000 + i).encode(), codec.encode({"movie_id": 900_000 + i, "title": f"New {i} (2026)",
                                                  "genres": ["Comedy"], "year": 2026, "tags": []}))
        for i in range(n)
    ]  # fmt: skip


async def _group_commits(settings: Settings, group: str | None = None) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(t, p) for t in (settings.topic_ratings, settings.topic_movies)
               for p in range(settings.topic_partitions)]  # fmt: skip
        got = await admin.list_consumer_group_offsets(group or settings.archive_group, partitions=tps)
        return {(tp.topic, tp.partition): m.offset for tp, m in got.items() if m is not None and m.offset >= 0}
    finally:
        await admin.close()


def test_every_record_is_archived_exactly_once_through_a_kill_9(case: Case) -> None:
    s = case.settings
    case.produce(s.topic_movies, _movies(5))
    case.produce(s.topic_ratings, _ratings(0, 1500))
    first = case.archiver()
    case.wait_archived(1)  # segments are being written
    first.kill9()  # midway: whatever it had buffered is lost with it and must be read again
    stale = s.archive_dir / s.topic_ratings / "p0" / ".tmp-e000000-000000000000-000000000001-dead"
    stale.write_bytes(b"a segment a kill -9 interrupted")
    case.produce(s.topic_ratings, _ratings(1500, 1500))
    case.archiver()
    expected = case.broker_rows()
    assert len(expected) == 3005
    case.wait_archived(len(expected))

    got = case.archived_rows()
    assert len(got) == len(set((t, p, o) for t, p, o, *_ in got)), "a record was archived twice"
    assert sorted(got) == sorted(expected)  # every record, raw (valid or not), with its key and timestamp
    assert not stale.exists()

    # The status and the group's commits say the same: nothing left unarchived.
    ends = {(t, p): hw for t in (s.topic_ratings, s.topic_movies)
            for p, hw in asyncio.run(high_watermarks(s, t)).items() if hw > 0}  # fmt: skip

    def status_at_end() -> bool:
        st = case.status()
        return bool(st) and all(st.get(f"{t}:{p}:offset") == str(hw - 1) for (t, p), hw in ends.items())

    wait_for(status_at_end, 30, "rs:archive to show every partition archived")
    st = case.status()
    assert st["records"] == str(len(expected)) and st["state"] == "running" and st["resets"] == "0"
    assert all(st[f"{t}:{p}:epoch"] == "0" and st[f"{t}:{p}:highwater"] == str(hw) for (t, p), hw in ends.items())
    wait_for(lambda: asyncio.run(_group_commits(s)) == ends, 30, "the archive group's commits to reach the log end")


def test_a_restart_commits_the_archived_tips_to_a_group_that_missed_them(case: Case) -> None:
    """A kill -9 between a segment and its commit leaves the group behind; the next start commits the tips."""
    s = case.settings
    case.produce(s.topic_movies, _movies(3))
    case.produce(s.topic_ratings, _ratings(0, 300))
    first = case.archiver()
    expected = case.broker_rows()
    case.wait_archived(len(expected))
    first.stop()
    ends = {(t, p): hw for t in (s.topic_ratings, s.topic_movies)
            for p, hw in asyncio.run(high_watermarks(s, t)).items() if hw > 0}  # fmt: skip
    # A group that never saw a commit stands for one whose last commit was lost; nothing new arrives.
    case.env["REELSTREAM_APP_ID"] = fresh = f"{s.app_id}-fresh"
    group = f"{fresh}-archive"
    assert asyncio.run(_group_commits(s, group)) == {}
    case.archiver()
    wait_for(lambda: asyncio.run(_group_commits(s, group)) == ends, 30, "the fresh group's commits to reach the tips")
    assert len(case.archived_rows()) == len(expected)  # nothing archived twice


def test_a_recreated_topic_starts_a_new_epoch(case: Case) -> None:
    s = case.settings
    case.produce(s.topic_ratings, _ratings(0, 600))
    case.archiver()
    old = case.broker_rows()
    case.wait_archived(len(old))
    before = {p: archive_tip(s.archive_dir, s.topic_ratings, p) for p in range(s.topic_partitions)}
    assert all(f.epoch == 0 and f.offset >= 0 for f in before.values())

    async def recreate() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([s.topic_ratings])
            await admin.create_topics([NewTopic(s.topic_ratings, s.topic_partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(recreate())  # the new log starts at offset 0 again, as after a Tansu restart
    case.produce(s.topic_ratings, _ratings(10_000, 30))
    new = [r for r in case.broker_rows() if r[0] == s.topic_ratings]
    assert len(new) == 30 and all(r[2] < 30 for r in new)
    case.wait_archived(len(new), epoch=1)

    assert sorted(case.archived_rows(epoch=0)) == sorted(old)  # the old log is kept, untouched
    assert sorted(case.archived_rows(epoch=1)) == sorted(new)  # the new one archived from its offset 0
    for p in range(s.topic_partitions):
        tip = archive_tip(s.archive_dir, s.topic_ratings, p)
        last = max((r for r in new if r[1] == p), key=lambda r: r[2])
        assert (tip.epoch, tip.offset, tip.fingerprint) == (1, last[2], fingerprint(last[3], last[4], last[5]))
    wait_for(lambda: case.status().get("resets") == str(s.topic_partitions), 30, "rs:archive to count the resets")
    assert case.status()["lost"] == "0"  # everything of the old log had been archived
    assert "log reset on" in case.archivers[0].tail()
    assert case.archivers[0].stop() == 0  # a clean stop after all that


def test_segments_are_atomic_and_a_reader_sees_each_offset_once(tmp_path: Path) -> None:
    """The file layer on its own: names sort as (epoch, offset), partial files are ignored, then removed."""
    archive = tmp_path / "archive"
    recs = [ArchivedRecord(o, 1000 + o, b"k", b"v%d" % o) for o in range(10)]
    write_segment(archive, "t", 0, 0, recs[:4])
    write_segment(archive, "t", 0, 0, recs[4:])
    write_segment(archive, "t", 0, 1, recs[:2])  # a new log: offsets start again
    (archive / "t" / "p0" / ".tmp-e000001-000000000002-000000000009-x").write_bytes(b"partial")
    segments = list_segments(archive, "t", 0)
    assert [(g.epoch, g.first, g.last) for g in segments] == [(0, 0, 3), (0, 4, 9), (1, 0, 1)]
    read = [(g.epoch, o) for g, frame in read_segments(archive, "t", 0) for o in frame["offset"].to_list()]
    assert read == [(0, o) for o in range(10)] + [(1, 0), (1, 1)]
    tip = archive_tip(archive, "t", 0)
    assert (tip.offset, tip.epoch, tip.fingerprint) == (1, 1, fingerprint(b"k", b"v1", 1001))
    assert remove_partial_segments(archive) == 1
    assert [p.name for p in (archive / "t" / "p0").iterdir() if p.name.startswith(".")] == []


def test_the_archiver_rides_out_redis_and_broker_outages(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Its own broker and Redis, stopped and started under it: the process keeps archiving and never exits."""
    run_dir, kafka_port, redis_port = tmp_path / "infra", local_services.free_port(), local_services.free_port()
    local_services.start_broker(run_dir, "127.0.0.1", kafka_port)
    local_services.start_redis(run_dir, "127.0.0.1", redis_port)
    env = {
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}", "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "REELSTREAM_TOPIC_PARTITIONS": "2", "REELSTREAM_ARCHIVE_SEGMENT_AGE_S": "0.3",
        "REELSTREAM_ARCHIVE_STATUS_INTERVAL_S": "0.2", "REELSTREAM_ARCHIVE_BACKOFF_MAX_S": "1",
        "REELSTREAM_REDIS_TIMEOUT_S": "1",
    }  # fmt: skip
    s = apply_env(monkeypatch, env)
    client = redis.Redis.from_url(s.redis_url)
    case = Case(s, {**os.environ, **env, "REELSTREAM_VAR_DIR": str(s.var_dir)}, client, tmp_path, [])
    try:
        ensure_topics_sync(s)
        archiver = case.archiver()
        case.produce(s.topic_ratings, _ratings(0, 100))
        case.wait_archived(100)

        local_services.stop_process(run_dir, "redis")  # Redis holds only the status: archiving goes on
        case.produce(s.topic_ratings, _ratings(100, 100))
        case.wait_archived(200)
        local_services.start_redis(run_dir, "127.0.0.1", redis_port)
        wait_for(lambda: case.status().get("records") == "200", 30, "the status written again once Redis is back")

        local_services.stop_process(run_dir, "broker")  # the memory-only broker: it comes back empty
        wait_for(lambda: case.status().get("state") == "degraded", 60, "the status to say the broker is away")
        assert archiver.alive(), archiver.tail()
        local_services.start_broker(run_dir, "127.0.0.1", kafka_port)
        ensure_topics_sync(s)
        case.produce(s.topic_ratings, _ratings(200, 40))
        case.wait_archived(40, epoch=1)
        assert len(case.archived_rows(epoch=0)) == 200  # the old log's records, each once
        assert sorted(case.archived_rows(epoch=1)) == sorted(case.broker_rows())
        wait_for(lambda: case.status().get("state") == "running", 30, "the status to say running again")
        assert case.status()["resets"] == str(s.topic_partitions) and case.status()["lost"] == "0"
        assert archiver.alive() and archiver.stop() == 0
    finally:
        for a in case.archivers:
            a.stop()
        client.close()
        local_services.stop_process(run_dir, "broker")
        local_services.stop_process(run_dir, "redis")
