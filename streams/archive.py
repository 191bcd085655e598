"""The archive: every record of the ratings, movies and impressions topics, appended to Parquet segments exactly
once.

Why: Redis is a view that can be rebuilt (``docs/durability.md``: Redis = f(store HISTORY, archive, log
tail)), and the local broker keeps its log in memory only, so the log itself cannot be that second copy.
``reelstream archive`` runs this module: a consumer of its own (group ``settings.archive_group``) that
appends the raw records, valid or not, to the feature-store folder; :mod:`streams.rebuild` re-validates
them through the worker's own processors.

Layout (``settings.archive_dir``, i.e. ``var/store/archive``)::

    .lock                                                   flock: one archiver per folder
    {topic}/p{partition}/e{epoch:06d}-{first:012d}-{last:012d}.parquet

Columns (:data:`SEGMENT_SCHEMA`): ``partition`` i32, ``offset`` i64, ``timestamp_ms`` i64 (the record's
timestamp), ``key`` binary (null: no key), ``value`` binary (the raw bytes), ``epoch`` i32 (the log
incarnation, :mod:`streams.log_identity`).

**Exactly once, by offset.** A partition's *tip* is the highest archived offset of its newest epoch, read
from the segment file names at start and after every error; the consumer seeks to tip + 1, and a record
at or below the tip is never written again. The group's Kafka commit (tip + 1, after each segment) only
serves ``reelstream lag``; it never decides where the archive resumes. A segment is written to a hidden
``.tmp-*`` file, fsynced, renamed and its folder fsynced (as :mod:`bootstrap.store` writes a version), so
a ``kill -9`` leaves whole segments only, and what was buffered is read again from the broker.

**Log identity**, with the worker's rules (:func:`streams.log_identity.verdict`): the tip is a
:class:`~streams.log_identity.Fence` (offset, epoch, fingerprint of the record there). Before segments are
written, and whenever a fetch high watermark falls or ends at or below what is held, a probe consumer
reads back the record at the tip (in an epoch with nothing archived yet: the first buffered record). A
log that is shorter, or holds another record there (a Tansu restart, a topic deleted and created again),
starts epoch + 1 from the new log's beginning; the records the old log had beyond the tip
(:func:`~streams.log_identity.lost_estimate`) are counted as lost, and buffered records of uncertain
origin are dropped and read again. Checking after fetching (never before) is what makes it safe: if
the record at the tip is still the archived one, no reset happened since, so every buffered record came
from that same log.

**Why partitions are assigned, not subscribed:** the folder lock already makes the archiver single, and
Tansu's group coordinator makes a rejoin wait seconds (docs/infra.md); the group id is kept for the commits.

**Outages.** Any broker or disk error ends the session: buffers are dropped, the consumers closed, and a
new session starts after a capped backoff (0.5 s, doubling to ``settings.archive_backoff_max_s``). Redis
only holds the status (``rs:archive``, :mod:`schemas.redis_keys`), so archiving goes on while it is down;
the status is written again (in full: a flushed Redis gets it back) once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import polars as pl
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from bootstrap.store import fsync_path
from reelstream.errors import InfraError
from reelstream.redis_client import async_redis_client
from reelstream.settings import Settings
from schemas import redis_keys as keys
from streams.admin import PROBE_POLL_MS
from streams.backoff import Backoff
from streams.log_identity import (
    NO_FENCE,
    Fence,
    LogView,
    did_highwater_fall,
    fingerprint,
    is_log_shorter,
    lost_estimate,
    verdict,
)

__all__ = [
    "SEGMENT_SCHEMA",
    "ArchivedRecord",
    "Archiver",
    "Segment",
    "archive_tip",
    "list_segments",
    "read_segments",
    "remove_partial_segments",
    "run_archiver",
    "write_segment",
]

log = logging.getLogger(__name__)

SEGMENT_SCHEMA: dict[str, pl.DataType] = {
    "partition": pl.Int32(),
    "offset": pl.Int64(),
    "timestamp_ms": pl.Int64(),
    "key": pl.Binary(),
    "value": pl.Binary(),
    "epoch": pl.Int32(),
}
_SEGMENT_RE = re.compile(r"^e(\d{6,})-(\d{12,})-(\d{12,})\.parquet$")
_TMP_PREFIX = ".tmp-"
_COMPRESSION: Final = "lz4"
#: The archive is not latency-bound: a longer fetch wait costs the broker less CPU (docs/infra.md).
FETCH_WAIT_MS = 500
FETCH_MAX_RECORDS = 10_000
#: A probe (read back one record per partition) or a consumer start that takes longer fails the session.
PROBE_TIMEOUT_S = 10.0
START_TIMEOUT_S = 15.0
BACKOFF_START_S = 0.5
#: Seconds between re-reads of the topics' partitions (a topic created after the archiver started).
PARTITIONS_REFRESH_S = 5.0
#: how often a failed group commit is tried again
COMMIT_RETRY_S = 1.0
#: No fetch response for this long (ms) while running: the status says ``degraded``.
BROKER_SILENT_MS = 5_000
#: Seconds between progress lines in the log (when something was archived).
PROGRESS_EVERY_S = 10.0


# --------------------------------------------------------------------------- segments on disk


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    """One record as the archive keeps it (its partition and epoch are the segment's)."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None

    def fingerprint(self) -> str:
        return fingerprint(self.key, self.value, self.timestamp_ms)


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment file: records ``first..last`` of one partition's epoch, in offset order."""

    path: Path
    partition: int
    epoch: int
    first: int
    last: int

    @property
    def span(self) -> int:
        """Offsets covered (the record count: the archived topics are not transactional)."""
        return self.last - self.first + 1


def _partition_dir(archive_dir: Path, topic: str, partition: int) -> Path:
    return archive_dir / topic / f"p{partition}"


def segment_name(epoch: int, first: int, last: int) -> str:
    """``e000001-000000000000-000000000041.parquet``: names sort as (epoch, offset)."""
    return f"e{epoch:06d}-{first:012d}-{last:012d}.parquet"


def list_segments(archive_dir: Path, topic: str, partition: int) -> list[Segment]:
    """Every complete segment of one partition, in (epoch, first offset) order."""
    folder = _partition_dir(archive_dir, topic, partition)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _SEGMENT_RE.match(path.name)
        if m:
            found.append(Segment(path, partition, int(m.group(1)), int(m.group(2)), int(m.group(3))))
    return sorted(found, key=lambda s: (s.epoch, s.first, s.last))


def archived_partitions(archive_dir: Path, topic: str) -> list[int]:
    """Partitions of ``topic`` with a folder in the archive."""
    folder = archive_dir / topic
    if not folder.is_dir():
        return []
    return sorted(int(p.name[1:]) for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"p\d+", p.name))


def archive_tip(archive_dir: Path, topic: str, partition: int) -> Fence:
    """The partition's tip: highest archived offset of the newest epoch and the fingerprint of that record."""
    segments = list_segments(archive_dir, topic, partition)
    if not segments:
        return NO_FENCE
    last = segments[-1]
    frame = pl.read_parquet(last.path, columns=["offset", "timestamp_ms", "key", "value"]).sort("offset")
    offset, ts, key, value = frame.row(frame.height - 1)
    return Fence(int(offset), last.epoch, fingerprint(key, value, int(ts)))


def write_segment(archive_dir: Path, topic: str, partition: int, epoch: int, records: list[ArchivedRecord]) -> Segment:
    """Write ``records`` (ascending offsets) as one segment, atomically: tmp file, fsync, rename, fsync folder."""
    if not records:
        raise ValueError("an empty segment")
    folder = _partition_dir(archive_dir, topic, partition)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(
        {
            "partition": [partition] * len(records),
            "offset": [r.offset for r in records],
            "timestamp_ms": [r.timestamp_ms for r in records],
            "key": [r.key for r in records],
            "value": [r.value for r in records],
            "epoch": [epoch] * len(records),
        },
        schema=SEGMENT_SCHEMA,
    )
    final = folder / segment_name(epoch, records[0].offset, records[-1].offset)
    tmp = folder / f"{_TMP_PREFIX}{final.stem}-{uuid.uuid4().hex}"
    try:
        frame.write_parquet(tmp, compression=_COMPRESSION, statistics=True)
        fsync_path(tmp)
        tmp.rename(final)
        fsync_path(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Segment(final, partition, epoch, records[0].offset, records[-1].offset)


def read_segments(archive_dir: Path, topic: str, partition: int) -> Iterator[tuple[Segment, pl.DataFrame]]:
    """Each segment with its records, in (epoch, offset) order.

    Offsets already read in the same epoch are dropped (defensive: the archiver never writes them twice).
    """
    epoch, top = None, -1
    for segment in list_segments(archive_dir, topic, partition):
        if segment.epoch != epoch:
            epoch, top = segment.epoch, -1
        if segment.last <= top:
            continue
        frame = pl.read_parquet(segment.path).sort("offset").filter(pl.col("offset") > top)
        if frame.height:
            top = int(frame["offset"][-1])
            yield segment, frame


def remove_partial_segments(archive_dir: Path) -> int:
    """Delete the ``.tmp-*`` files a killed archiver left (only while holding the folder lock)."""
    removed = 0
    if archive_dir.is_dir():
        for stale in archive_dir.glob(f"*/p*/{_TMP_PREFIX}*"):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def _try_lock(archive_dir: Path) -> IO[str] | None:
    """The folder's exclusive flock (released by the kernel if this process dies), or None if held."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    fh = (archive_dir / ".lock").open("a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


# --------------------------------------------------------------------------- the archiver


class _ProbeTimeout(InfraError):
    """The broker did not answer a probe in time (the session restarts)."""


@dataclass
class _Partition:
    """One partition's archive state in this process."""

    topic: str
    partition: int
    fence: Fence = NO_FENCE  #: the tip: highest archived offset of the current epoch
    buffer: list[ArchivedRecord] = field(default_factory=list)
    nbytes: int = 0
    since: float = 0.0  #: monotonic time the oldest buffered record arrived
    seen: int | None = None  #: highest fetch high watermark seen in this incarnation
    suspect: bool = False  #: the high watermark fell or ends before what is held: verify before anything else
    segments: int = 0  #: on disk, every epoch
    records: int = 0  #: on disk, every epoch
    last_write_ms: int = 0

    @property
    def top(self) -> int:
        """The highest offset held (buffered, else archived)."""
        return self.buffer[-1].offset if self.buffer else self.fence.offset

    def reference(self) -> Fence | None:
        """The record to read back before trusting the buffer: the tip, else the first buffered record."""
        if self.fence.offset >= 0:
            return self.fence
        if self.buffer:
            first = self.buffer[0]
            return Fence(first.offset, self.fence.epoch, first.fingerprint())
        return None

    def drop_buffer(self) -> None:
        self.buffer = []
        self.nbytes = 0

    def due(self, now: float, settings: Settings) -> bool:
        return bool(self.buffer) and (
            self.nbytes >= settings.archive_segment_bytes or now - self.since >= settings.archive_segment_age_s
        )


class Archiver:
    """``reelstream archive``: see the module docstring. :meth:`run` returns only once ``stop`` is set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = settings.consumed_topics
        self.parts: dict[TopicPartition, _Partition] = {}
        #: partitions whose topic vanished (deleted): their state waits for the topic to come back
        self._gone: dict[TopicPartition, _Partition] = {}
        self.resets = 0
        self.lost = 0
        self.archived = 0  #: records this process wrote
        self.state = "starting"
        self.started_ms = int(time.time() * 1000)
        self._redis: aioredis.Redis | None = None
        self._redis_down = False
        self._last_status = 0.0
        self._last_progress = time.monotonic()
        self._progress_mark = 0
        #: group offsets (tip + 1) not yet committed: a failed commit (a rebalance after a kill -9) is retried
        self._uncommitted: dict[TopicPartition, int] = {}
        self._commit_tried = 0.0

    # --- the outer loop -----------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Archive until ``stop`` is set; infrastructure errors are retried with capped backoff, never raised."""
        lock = await self._acquire_lock(stop)
        if lock is None:
            return
        try:
            removed = remove_partial_segments(self.settings.archive_dir)
            if removed:
                log.info("removed %d partial segment file(s) of a killed archiver", removed)
            backoff = Backoff(BACKOFF_START_S, self.settings.archive_backoff_max_s)
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await self._session(stop)
                except (KafkaError, OSError, TimeoutError, InfraError) as exc:
                    if time.monotonic() - started > 4 * self.settings.archive_backoff_max_s:
                        backoff.reset()  # it had been running: a new outage starts short again
                    self.state = "degraded"
                    delay = backoff.next()
                    log.warning("archive session failed (%s: %s); retrying in %.1f s (unwritten buffers are "
                                "read again from the archived offsets)", type(exc).__name__, exc, delay)  # fmt: skip
                    await self._write_status(force=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            self.state = "stopped"
            await self._write_status(force=True)
        finally:
            lock.close()
            if self._redis is not None:
                with contextlib.suppress(RedisError, OSError):
                    await self._redis.aclose()

    async def _acquire_lock(self, stop: asyncio.Event) -> IO[str] | None:
        waited = False
        while not stop.is_set():
            lock = _try_lock(self.settings.archive_dir)
            if lock is not None:
                if waited:
                    log.info("archive lock acquired")
                return lock
            if not waited:
                log.warning("another archiver holds %s; waiting for it", self.settings.archive_dir / ".lock")
                waited = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return None

    # --- one session: consumers up, verify, fetch and write until stop or an error ------
    async def _session(self, stop: asyncio.Event) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap, group_id=s.archive_group, client_id=s.archive_group,
            enable_auto_commit=False, auto_offset_reset="none", fetch_max_wait_ms=FETCH_WAIT_MS,
        )  # fmt: skip
        probe = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=50, max_partition_fetch_bytes=64 * 1024,
        )  # fmt: skip
        try:
            await asyncio.wait_for(consumer.start(), START_TIMEOUT_S)
            await asyncio.wait_for(probe.start(), START_TIMEOUT_S)
            await self._refresh_partitions(consumer, probe, initial=True)
            self.state = "running"
            refreshed = time.monotonic()
            while not stop.is_set():
                if time.monotonic() - refreshed >= PARTITIONS_REFRESH_S:
                    await self._refresh_partitions(consumer, probe)
                    refreshed = time.monotonic()
                if not self.parts:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
                    await self._write_status()
                    continue
                batch = await consumer.getmany(timeout_ms=FETCH_WAIT_MS, max_records=FETCH_MAX_RECORDS)
                self._take(consumer, batch)
                self.state = "running" if self._broker_answers(consumer) else "degraded"
                now = time.monotonic()
                todo = [p for p in self.parts.values() if p.suspect or p.due(now, s)]
                if todo:
                    await self._flush(consumer, probe, todo, write=[p for p in todo if p.due(now, s)])
                if self._uncommitted and time.monotonic() - self._commit_tried >= COMMIT_RETRY_S:
                    await self._commit(consumer)
                await self._write_status()
                self._log_progress()
            pending = [p for p in self.parts.values() if p.buffer]
            if pending:  # stopping: write what is buffered (after the same check)
                await self._flush(consumer, probe, pending, write=pending)
        finally:
            for part in self.parts.values():
                part.drop_buffer()  # never written: read again from the tip by the next session
            await _close(consumer)
            await _close(probe)

    async def _refresh_partitions(self, consumer: AIOKafkaConsumer, probe: AIOKafkaConsumer,
                                  initial: bool = False) -> None:  # fmt: skip
        """Assign every partition of the archived topics; at start (and when they change) seek each to its tip + 1."""
        await consumer.topics()  # a metadata round trip: topics created since are seen
        tps = {
            TopicPartition(t, p) for t in self.topics for p in (consumer.partitions_for_topic(t) or ())
        }  # fmt: skip
        if not initial and tps == set(self.parts):
            return
        for part in self.parts.values():
            part.drop_buffer()
        archive_dir = self.settings.archive_dir
        for tp in sorted(tps):
            disk = await asyncio.to_thread(archive_tip, archive_dir, tp.topic, tp.partition)
            segments = list_segments(archive_dir, tp.topic, tp.partition)
            old = self.parts.get(tp) or self._gone.pop(tp, None)
            part = self.parts[tp] = old or _Partition(tp.topic, tp.partition)
            # A reset judged earlier with nothing archived since keeps its new epoch; else the disk decides.
            if not (old is not None and old.fence.offset < 0 and old.fence.epoch > disk.epoch):
                part.fence = disk
            part.segments, part.records = len(segments), sum(seg.span for seg in segments)
        for tp in set(self.parts) - tps:
            self._gone[tp] = self.parts.pop(tp)  # keeps what it saw of the old log (the lost estimate)
        consumer.assign(sorted(tps))
        if tps:
            await self._flush(consumer, probe, list(self.parts.values()), write=[])  # verify every tip
            # The group learns the verified tips: its commit catches up where a kill -9 lost the last one.
            self._uncommitted.update({tp: p.fence.offset + 1 for tp, p in self.parts.items() if p.fence.offset >= 0})
            for tp, part in self.parts.items():
                await self._seek_after_tip(consumer, tp, part)
            log.info("archiving %d partition(s) of %s from their archived offsets: %s", len(tps),
                     ", ".join(self.topics), self._tips())  # fmt: skip

    def _broker_answers(self, consumer: AIOKafkaConsumer) -> bool:
        """A fetch response arrived lately (aiokafka reconnects by itself; this only says whether it has)."""
        polled = [consumer.last_poll_timestamp(tp) or 0 for tp in self.parts]
        return not polled or time.time() * 1000 - max(polled) < BROKER_SILENT_MS

    async def _seek_after_tip(self, consumer: AIOKafkaConsumer, tp: TopicPartition, part: _Partition) -> None:
        if part.fence.offset >= 0:
            consumer.seek(tp, part.fence.offset + 1)
        else:
            await consumer.seek_to_beginning(tp)

    def _take(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]) -> None:
        """Buffer the fetched records and flag partitions whose high watermark says the log changed."""
        now = time.monotonic()
        for tp, records in batch.items():
            part = self.parts.get(tp)
            if part is None:
                continue
            for r in records:
                if r.offset <= part.top:
                    continue  # already held (a fetch that overlapped a seek)
                if not part.buffer:
                    part.since = now
                part.buffer.append(ArchivedRecord(r.offset, r.timestamp, r.key, r.value))
                part.nbytes += len(r.value or b"") + len(r.key or b"")
        for tp, part in self.parts.items():
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            if did_highwater_fall(part.seen, hw) or is_log_shorter(hw, part.top):
                part.suspect = True
            elif not part.suspect:
                part.seen = hw if part.seen is None else max(part.seen, hw)

    async def _flush(
        self, consumer: AIOKafkaConsumer, probe: AIOKafkaConsumer, parts: list[_Partition], write: list[_Partition]
    ) -> None:
        """Verify each partition's reference record, handle resets, then write the segments that are due."""
        refs = {TopicPartition(p.topic, p.partition): (p, p.reference()) for p in parts}
        looked = await self._probe(probe, {tp: ref.offset for tp, (_, ref) in refs.items() if ref is not None})
        written: dict[TopicPartition, int] = {}
        writing = {id(p) for p in write}
        for tp, (part, ref) in refs.items():
            if ref is None:
                part.suspect = False
                continue
            hw, fp_at = looked[tp]
            ruling = verdict(ref, LogView(highwater=hw, seen=part.seen), fp_at)
            if ruling.is_reset:
                await self._reset(consumer, tp, part, ruling.value, hw)
                continue
            part.suspect = False
            if hw is not None:
                part.seen = hw  # read just now: the current log's truth (a fetch's may be stale)
            if id(part) in writing and part.buffer:
                records = part.buffer
                try:
                    segment = await asyncio.to_thread(
                        write_segment, self.settings.archive_dir, part.topic, part.partition, part.fence.epoch, records
                    )
                except pl.exceptions.PolarsError as exc:  # the Parquet writer's I/O errors (disk full...): retried
                    raise OSError(f"writing a segment of {tp.topic}[{tp.partition}] failed: {exc}") from exc
                part.fence = Fence(records[-1].offset, part.fence.epoch, records[-1].fingerprint())
                part.drop_buffer()
                part.segments += 1
                part.records += segment.span
                part.last_write_ms = int(time.time() * 1000)
                self.archived += len(records)
                written[tp] = part.fence.offset + 1
        if written:
            self._uncommitted.update(written)
            await self._commit(consumer)

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit the group offsets written since the last commit that succeeded; kept for a retry on failure."""
        self._commit_tried = time.monotonic()
        offsets = {tp: off for tp, off in self._uncommitted.items() if tp in self.parts}
        try:
            if offsets:
                await consumer.commit(offsets)
        except KafkaError as exc:  # only ``lag`` reads it; the archive resumes from its own tips
            log.warning("archive group commit failed (%s); retried in %.0f s, the archive itself is unaffected",
                        exc, COMMIT_RETRY_S)  # fmt: skip
            return
        self._uncommitted.clear()

    async def _reset(self, consumer: AIOKafkaConsumer, tp: TopicPartition, part: _Partition, reason: str,
                     hw: int | None) -> None:  # fmt: skip
        old = part.fence
        lost = lost_estimate(old, part.seen)
        epoch = old.epoch + 1 if old.offset >= 0 else old.epoch
        log.warning(
            "log reset on %s[%d] (%s): high watermark %s, archived offset %d of epoch %d; %d record(s) of the old "
            "log were never archived (lost); archiving the new log from its start as epoch %d",
            tp.topic, tp.partition, reason, hw, old.offset, old.epoch, lost, epoch,
        )  # fmt: skip
        self.resets += 1
        self.lost += lost
        self._uncommitted.pop(tp, None)  # an offset of the old log
        part.fence = Fence(-1, epoch)
        part.drop_buffer()
        part.seen = None
        part.suspect = False
        await consumer.seek_to_beginning(tp)

    async def _probe(self, probe: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        """Per partition, ``(high watermark, fingerprint of the record at the offset or None)``, read now."""
        if not offsets:
            return {}
        probe.assign(list(offsets))
        for tp, off in offsets.items():
            probe.seek(tp, off)
        found: dict[TopicPartition, tuple[int | None, str | None]] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PROBE_TIMEOUT_S
        while len(found) < len(offsets):
            if loop.time() > deadline:
                raise _ProbeTimeout(f"no fetch response for {sorted(set(offsets) - set(found))} within "
                                    f"{PROBE_TIMEOUT_S:.0f} s")  # fmt: skip
            pending = [tp for tp in offsets if tp not in found]
            batch = await probe.getmany(*pending, timeout_ms=PROBE_POLL_MS, max_records=1000)
            for tp, records in batch.items():
                at = next((r for r in records if r.offset >= offsets[tp]), None)
                if tp not in found and at is not None:
                    fp = fingerprint(at.key, at.value, at.timestamp) if at.offset == offsets[tp] else None
                    found[tp] = (probe.highwater(tp), fp)
            for tp in pending:
                hw = probe.highwater(tp)
                if tp not in found and hw is not None and hw <= offsets[tp]:
                    found[tp] = (hw, None)  # the log ends before the offset
        return found

    # --- status and progress -------------------------------------------------------
    def _tips(self) -> str:
        return ", ".join(
            f"{tp.topic}[{tp.partition}]={p.fence.offset}@e{p.fence.epoch}" for tp, p in sorted(self.parts.items())
        )

    def status(self) -> dict[str, Any]:
        """The ``rs:archive`` fields (schemas/redis_keys.py)."""
        out: dict[str, Any] = {
            "records": sum(p.records for p in self.parts.values()),
            "segments": sum(p.segments for p in self.parts.values()),
            "resets": self.resets, "lost": self.lost, "state": self.state, "pid": os.getpid(),
            "started_ms": self.started_ms, "updated_ms": int(time.time() * 1000),
        }  # fmt: skip
        for tp, p in self.parts.items():
            prefix = f"{tp.topic}:{tp.partition}:"
            out |= {
                prefix + "offset": p.fence.offset, prefix + "epoch": p.fence.epoch,
                prefix + "highwater": -1 if p.seen is None else p.seen, prefix + "segments": p.segments,
                prefix + "records": p.records, prefix + "last_write_ms": p.last_write_ms,
            }  # fmt: skip
        return out

    async def _write_status(self, force: bool = False) -> None:
        """Write ``rs:archive`` at most every ``archive_status_interval_s``; a Redis outage is logged once."""
        now = time.monotonic()
        if not force and now - self._last_status < self.settings.archive_status_interval_s:
            return
        self._last_status = now
        try:
            if self._redis is None:
                self._redis = async_redis_client(self.settings.redis_url)
            await self._redis.hset(
                keys.ARCHIVE, mapping=dict(self.status().items())
            )  # re-keyed for redis-py's field type
        except (RedisError, OSError) as exc:
            if not self._redis_down:
                log.warning("Redis unavailable (%s); archiving goes on, the status waits for it", exc)
                self._redis_down = True
            return
        if self._redis_down:
            log.info("Redis answers again; archive status written")
            self._redis_down = False

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_S or self.archived == self._progress_mark:
            return
        n, dt = self.archived - self._progress_mark, now - self._last_progress
        tail = sum(max((p.seen or 0) - 1 - p.fence.offset, 0) for p in self.parts.values())
        log.info("archived %d record(s) in %.0f s (%.0f/s); %d in total in %d segment(s); unarchived tail %d; "
                 "%d reset(s), %d lost", n, dt, n / dt, sum(p.records for p in self.parts.values()),
                 sum(p.segments for p in self.parts.values()), tail, self.resets, self.lost)  # fmt: skip
        self._last_progress, self._progress_mark = now, self.archived


async def _close(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer whatever state the broker left it in (errors here change nothing: it is discarded)."""
    try:
        await asyncio.wait_for(consumer.stop(), START_TIMEOUT_S)
    except (KafkaError, OSError, TimeoutError) as exc:
        log.debug("closing a consumer: %s", exc)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # this task is being cancelled: let it go
        # aiokafka's fetcher, stopped while it waited in its retry backoff (the broker was away), lets its
        # own CancelledError out of stop(); the consumer is closed all the same.


async def run_archiver(settings: Settings) -> None:
    """Run the archiver until SIGINT or SIGTERM (what ``reelstream archive`` does)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    archiver = Archiver(settings)
    log.info("archive of %s into %s (group %s)", ", ".join(archiver.topics), settings.archive_dir,
             settings.archive_group)  # fmt: skip
    await archiver.run(stop)
    log.info("archive stopped: %d record(s) written by this run; %s", archiver.archived, archiver._tips())
