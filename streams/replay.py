"""Replaying the STREAM part of the feature store into the ratings topic, resumably.

Events go out in the store's replay order (ts, user_id, movie_id), keyed by user
id, with deterministic ids (:func:`streams.events.replay_event_id`).

**Checkpoint** (``settings.replay_checkpoint``, JSON, replaced atomically):
``next`` is the index of the first event the broker has *not* acknowledged
in an unbroken prefix, and ``offsets`` the highest acknowledged offset per
partition (or the partition's end before the replay began). Only acknowledged
sends move it.

**Resume** neither skips nor duplicates: events from ``next`` on may have reached
the broker before the interruption (in flight, acknowledged out of order, or a
``kill -9`` before the checkpoint was written). The resume reads each partition
from its checkpoint offset to its high watermark, collects the event ids found,
and skips those events while re-sending from ``next``.

**A reset log** (the checkpoint names offsets the topic no longer holds: a restarted memory-only
Tansu, a topic deleted and created again) is told by the same rule the worker's fence uses,
:func:`streams.log_identity.is_log_shorter`. The replay does *not* start over from index 0: Redis keeps
its state (AOF) and the archive keeps what was applied, so sending every event again would apply it
twice. It continues from the checkpoint's ``next`` against the new log, with the offsets re-based to
-1 (it reads the new log from its beginning for ids already there). Events acknowledged by the lost
log but never consumed would be the broker's loss, so the resume starts ``settings.resend_window_s``
earlier than ``next`` (the checkpoint keeps ``recent``, ``[[wall time s, next], ...]`` over the window):
the worker skips the copies of events it had applied (their identity) and applies the others once.

**A broker connection that breaks** while the replay runs (:class:`streams.broker_watch.BrokerWatch`) has
the same answer in-process: what the broker acknowledged in the window before the break is sent again
(:mod:`streams.resend`); ``ReplaySummary.resent`` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from reelstream.errors import ReelstreamError
from reelstream.settings import Settings
from schemas.wire import DecodeError, codec_for
from streams.admin import PROBE_POLL_MS, high_watermarks
from streams.broker_watch import BrokerWatch
from streams.events import replay_event_id, user_key
from streams.log_identity import is_log_shorter
from streams.resend import ResendWindow
from streams.serve_traffic import ServeHook

__all__ = ["CheckpointError", "Pace", "ReplaySummary", "read_checkpoint", "replay", "resend_start"]

CHECKPOINT_EVERY_S = 0.5
#: Sends between looks at the clock for a checkpoint: a paced replay (100 events/s) still checkpoints every
#: ~0.5 s, so a resume after a broker restart sends again at most that much of what the lost log held.
CHECK_EVERY = 16
#: STREAM rows turned into Python objects at a time (the rest stays in Arrow columns).
ROWS_PER_CHUNK = 65_536


class CheckpointError(ReelstreamError):
    """The replay checkpoint does not belong to this stream (another store version, topic or limit)."""


@dataclass(frozen=True)
class Pace:
    """How fast to replay: ``rate`` events/s, ``speed`` x event time, or neither (as fast as possible)."""

    rate: float | None = None
    speed: float | None = None

    def due_s(self, index: int, event_s: float) -> float:
        """When event ``index`` (``event_s`` event seconds after the first) is due, in seconds from the start.

        >>> Pace(rate=100).due_s(50, 9.0), Pace(speed=10).due_s(50, 9.0), Pace().due_s(50, 9.0)
        (0.5, 0.9, 0.0)
        """
        if self.rate:
            return index / self.rate
        if self.speed:
            return event_s / self.speed
        return 0.0


@dataclass(frozen=True)
class ReplaySummary:
    events: int  #: sent (and acknowledged) by this run
    skipped: int  #: found already in the topic on resume
    seconds: float
    start: int  #: first index this run considered
    end: int  #: one past the last index
    #: the checkpoint named records the topic no longer holds (a reset log): continued from ``next`` on the new log
    reset: bool = False
    resent: int = 0  #: events sent again after a broken broker connection (:mod:`streams.resend`)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint ({exc}); delete it to start over") from None


def _write_checkpoint(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    tmp.replace(path)


async def _ids_after(settings: Settings, topic: str, after: dict[int, int], ends: dict[int, int]) -> set[str]:
    """Event ids in each partition strictly after ``after[p]`` up to its high watermark."""
    todo = {p: ends[p] for p in ends if ends[p] > after.get(p, -1) + 1}
    if not todo:
        return set()
    codec = codec_for("RatingEvent")
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    found: set[str] = set()
    try:
        tps = {p: TopicPartition(topic, p) for p in todo}
        consumer.assign(list(tps.values()))
        for p, tp in tps.items():
            consumer.seek(tp, after.get(p, -1) + 1)
        while todo:
            batch = await consumer.getmany(timeout_ms=PROBE_POLL_MS, max_records=10_000)
            for records in batch.values():
                for rec in records:
                    try:
                        found.add(codec.decode(rec.value)["event_id"])
                    except DecodeError:
                        continue
            for p in list(todo):
                if await consumer.position(tps[p]) >= todo[p]:
                    del todo[p]
    finally:
        await consumer.stop()
    return found


@dataclass
class _Resume:
    """Where a run starts: the stream index, the acknowledged offsets, the ids already in the topic."""

    start: int
    offsets: dict[int, int]
    seen: set[str]
    reset: bool
    recent: list[list[float]]  #: [wall time s, next] at each checkpoint, over the resend window


async def _resume_point(settings: Settings, ident: dict[str, str], ends: dict[int, int], resume: bool) -> _Resume:
    """The start of a fresh run, or of ``--resume`` from the checkpoint (CheckpointError: another replay's)."""
    path = settings.replay_checkpoint
    doc = read_checkpoint(path) if resume else None
    if doc is None:
        return _Resume(0, {p: hw - 1 for p, hw in ends.items()}, set(), False, [])
    if doc.get("ident") != ident:
        raise CheckpointError(
            f"{path} belongs to another replay ({doc.get('ident')}); rerun without --resume to start over"
        )
    start, reset = int(doc["next"]), False
    offsets = {int(p): int(o) for p, o in doc["offsets"].items()}
    if any(is_log_shorter(ends.get(p, 0), o) for p, o in offsets.items()):
        # The topic holds fewer records than this replay saw acknowledged: a new log (Tansu keeps topics in
        # memory). Redis kept what was applied, so go on from ``next`` (module docstring), skipping whatever
        # the new log already holds.
        offsets, reset = {p: -1 for p in ends}, True
        start = resend_start(doc, settings.resend_window_s)
    seen = await _ids_after(settings, ident["topic"], offsets, ends)
    return _Resume(start, offsets, seen, reset, [r for r in doc.get("recent", []) if int(r[1]) <= start])


@dataclass
class _Acks:
    """The sends in flight, oldest first, and how far the stream is acknowledged in order (the checkpoint)."""

    offsets: dict[int, int]  #: partition -> highest acknowledged offset
    acked_next: int  #: every stream index before this one is acknowledged (or was skipped)
    inflight: deque[tuple[int, asyncio.Future[Any]]] = field(default_factory=deque)

    def drain(self, handled_next: int, strict: bool = True) -> None:
        """Move past the acknowledged head of the sends; with none in flight, everything before
        ``handled_next`` (skips included) is done. ``strict`` raises a failed send's error; otherwise the
        checkpoint stays before the first failed send."""
        inflight = self.inflight
        while inflight and inflight[0][1].done():
            idx, fut = inflight[0]
            if not strict and (fut.cancelled() or fut.exception() is not None):
                return
            meta = fut.result()
            inflight.popleft()
            if meta.offset > self.offsets.get(meta.partition, -1):
                self.offsets[meta.partition] = meta.offset
            self.acked_next = idx + 1
        if not inflight:
            self.acked_next = max(self.acked_next, handled_next)


async def replay(
    settings: Settings,
    stream: pl.DataFrame,
    *,
    fingerprint: str,
    pace: Pace = Pace(),
    resume: bool = False,
    limit: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    producer_kwargs: dict[str, Any] | None = None,
    serve: ServeHook | None = None,
) -> ReplaySummary:
    """Produce ``stream`` (columns user_id, movie_id, rating, ts seconds) to the ratings topic.

    ``serve`` is called around each event produced (``replay --serve-rate``:
    :class:`streams.serve_traffic.ServeTraffic` asks the gateway for the user's list first;
    ``--walk``: :class:`streams.live_walk.LiveWalk` also waits for the previous events to be applied).
    """
    topic = settings.topic_ratings
    path = settings.replay_checkpoint
    end = stream.height if limit is None else min(limit, stream.height)
    ident = {"fingerprint": fingerprint, "topic": topic, "bootstrap": settings.kafka_bootstrap}
    at = await _resume_point(settings, ident, await high_watermarks(settings, topic), resume)
    start, seen, recent = at.start, at.seen, at.recent
    acks = _Acks(at.offsets, start)

    def checkpoint() -> None:
        nonlocal recent
        recent = _keep_recent(recent, acks.acked_next, settings.resend_window_s)
        _write_checkpoint(path, {"ident": ident, "next": acks.acked_next, "offsets": acks.offsets, "end": end,
                                 "recent": recent})  # fmt: skip

    _write_checkpoint(path, {"ident": ident, "next": start, "offsets": acks.offsets, "end": end, "recent": recent})
    if on_progress is not None:
        on_progress(start)
    cols = stream.slice(start, max(end - start, 0)).select("user_id", "movie_id", "rating", "ts")
    n = cols.height

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5, **(producer_kwargs or {})
    )
    sends = _Sends(producer, topic, cols, ResendWindow(settings.resend_window_s))
    resends: list[asyncio.Future[Any]] = []
    resent = sent = skipped = i_done = 0
    await producer.start()
    t0 = last_ckpt = time.perf_counter()
    ts0 = int(cols["ts"][0]) if n else 0

    try:
        # Python objects for one chunk at a time: a 32M-scale STREAM as four lists would take gigabytes. The
        # producer's send waits while the partition's batch is full, so memory stays bounded at any pace.
        for base in range(0, n, ROWS_PER_CHUNK):
            chunk = cols.slice(base, ROWS_PER_CHUNK)
            rows = zip(*(chunk[c].to_list() for c in ("user_id", "movie_id", "rating", "ts")), strict=True)
            for i, (uid, mid, rating, ts) in enumerate(rows, base):
                ahead = pace.due_s(i, ts - ts0) - (time.perf_counter() - t0)
                if ahead > 0.002:
                    await asyncio.sleep(ahead)
                event_id = replay_event_id(uid, mid, ts * 1000)
                i_done = i + 1
                if event_id in seen:
                    skipped += 1
                    continue
                if serve is not None:
                    await serve.before(uid, mid, rating, ts * 1000)
                ack = await sends.send(i, uid, mid, rating, ts, event_id)
                if serve is not None:
                    serve.sent(uid, ack)
                acks.inflight.append((start + i, ack))
                sent += 1
                resends += await sends.resend_due()
                if sent % CHECK_EVERY == 0:
                    acks.drain(start + i_done)
                    if (now := time.perf_counter()) - last_ckpt >= CHECKPOINT_EVERY_S:
                        checkpoint()
                        last_ckpt = now
                        if on_progress is not None:
                            on_progress(start + i + 1)
        await producer.flush()
        if acks.inflight:
            await asyncio.gather(*(f for _, f in acks.inflight))
        while sends.window.due or resends:  # a break during the last sends: until every copy is acknowledged
            resends += await sends.resend_due()
            await asyncio.gather(*resends)
            resent += len(resends)
            resends = []
        acks.drain(start + i_done)
        acks.acked_next = end
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()  # sends what is in flight, so more of it can be checkpointed
        acks.drain(start + i_done, strict=False)
        checkpoint()
    if on_progress is not None:
        on_progress(end)
    return ReplaySummary(sent, skipped, time.perf_counter() - t0, start, end, at.reset, resent)


class _Sends:
    """The replay's sends: each acknowledged one enters the resend window (the broker may die after acking)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, cols: pl.DataFrame, window: ResendWindow[int]) -> None:
        self.producer, self.topic, self.cols, self.window = producer, topic, cols, window  # window: row indexes
        self.watch = BrokerWatch(producer.client)
        self.watch.on_break.append(window.broke)
        self.encode = codec_for("RatingEvent").encode

    async def send(self, j: int, uid: int, mid: int, rating: float, ts: int, event_id: str) -> asyncio.Future[Any]:
        """Send row ``j`` (``ts`` in event seconds) as a RatingEvent keyed by its user."""
        value = self.encode({"event_id": event_id, "user_id": uid, "movie_id": mid, "rating": rating,
                             "event_ts": ts * 1000, "source": "replay"})  # fmt: skip
        fut = await self.producer.send(self.topic, value, key=user_key(uid))
        fut.add_done_callback(_record_ack(self.window, self.watch, j))
        return fut

    async def resend_due(self) -> list[asyncio.Future[Any]]:
        """After a broken broker connection, send again what it acknowledged lately (none: no break)."""
        out = []
        for j in self.window.take_due() if self.window.due else ():
            uid, mid, rating, ts = self.cols.row(j)
            out.append(await self.send(j, uid, mid, rating, ts, replay_event_id(uid, mid, ts * 1000)))
        return out


def _record_ack(window: ResendWindow[int], watch: BrokerWatch, index: int) -> Callable[[asyncio.Future[Any]], None]:
    """Record the acknowledgement of event ``index`` (due at once when a connection broke since it was sent)."""
    breaks = watch.breaks

    def done(fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            window.acked(index, broke_since_sent=watch.breaks != breaks)

    return done


def _keep_recent(recent: list[list[float]], next_index: int, window_s: float) -> list[list[float]]:
    """``recent`` plus ``[now, next_index]``, without entries older than the resend window."""
    now = time.time()
    return [r for r in recent if r[0] >= now - window_s] + [[round(now, 3), next_index]]


def resend_start(doc: dict[str, Any], window_s: float) -> int:
    """Where a resume after a reset log starts: the ``next`` of ``window_s`` before the last checkpoint.

    >>> resend_start({"next": 900, "recent": [[100.0, 300], [120.0, 600], [140.0, 900]]}, 30.0)
    600
    >>> resend_start({"next": 900}, 30.0)
    900
    """
    nxt = int(doc["next"])
    recent = doc.get("recent") or []
    if not recent:
        return nxt
    last = max(float(t) for t, _ in recent)
    return min([int(n) for t, n in recent if float(t) >= last - window_s] + [nxt])
