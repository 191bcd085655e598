"""Turning a batch of Kafka messages into one atomic write of the Redis feature tables: the worker's Kafka-free core.

Not pure: ``plan`` reads the store and advances the runtime's online model and its drift detector.

The worker (``streams/consumer.py`` collects a batch, ``streams/apply.py``
applies it) only calls :meth:`RatingProcessor.plan`, sends the plan's dead
letters, and calls :meth:`RatingProcessor.commit`. Everything here runs without Kafka, against
either store (:mod:`streams.store`), which is how the tests compute the expected
Redis contents "directly in Python from the same events".

Per batch:

1. decode each message; movies the model does not know are looked up among the
   MovieEvent-announced movies (``rs:movie:{mid}``) and given rows from their side features;
2. judge each event by the rating contract (:func:`schemas.ratings.rating_verdict`: user,
   key, source, rating, time window, movie); refused ones become dead letters with their reason;
3. one read (a Lua script, one round trip): the stored offsets, the batch's
   users' state, and their earlier ratings of the batch's movies;
4. messages at or below the stored offset of their partition are skipped
   (already applied before a crash or rebalance); so is a rating event already applied (same user,
   movie, rating and event time: a producer's retry, a replay resumed after a broker restart, a log
   read again), which an offset alone cannot recognise. The user's ``rated`` entry keeps the rating
   *and* event time of the movie's latest rating, so a copy of it is recognised however long ago it
   was applied; a copy of an older rating of a movie since re-rated is found in the recent list
   (``RECENT_MAX`` entries, read only for users whose batch re-rates a movie);
5. each event is folded into its user's state (``models.state.fold_in``), the
   user's statistics, rated set and recent list, the item aggregates, the
   trending score and (when the model has an item prior) the prior's count and
   clock, and scored then learned by the online model; a freshness probe (source
   ``probe``) changes only its probe user's state, never the shared tables;
6. the result is a list of ops plus a fence ``{partition: (offset read, new
   highest offset)}`` that :meth:`commit` applies atomically.

**Trending and the item prior.** Both zsets hold ``log sum_e exp(d * ts_e)`` (event seconds) per movie,
with ``d = ln 2 / half-life``: ``rs:items:trending`` at ``settings.trending_half_life_s`` (the cold-start
fallback's meaning of "trending"), ``rs:items:prior`` at the loaded model's ``item_prior.half_life_s``
(what the model was evaluated with; :meth:`models.runtime.ModelRuntime.prior_logits`). The prior's clock,
``rs:items:prior:clock`` ``event_ms``, is the latest event time applied (a max, so the gateway's ``now``
is deterministic and in event time). All of it is written by the same fenced script as the rest of the
batch, so it is exactly-once under redelivery too.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from models.registry import ModelSet
from models.runtime import ModelRuntime
from models.state import UserState, cold_state, encode, fold_in
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.movie_record import decode_movie, encode_movie
from schemas.ratings import PROBE_SOURCE, RatingLimits, rating_verdict
from schemas.redis_keys import text
from schemas.side_features import SideEncoder
from schemas.user_record import (
    FOLD_FIELDS,
    RecordError,
    decode_fold_row,
    encode_rated,
    encode_recent,
    encode_user,
)
from schemas.wire import DecodeError, SchemaCodec, codec_for
from streams.events import dead_letter_key
from streams.log_identity import (
    NO_FENCE,
    Fence,
    LogReset,
    LogView,
    Verdict,
    fingerprint,
    is_gap,
    is_same_origin,
    lost_estimate,
    verdict,
)
from streams.online import OnlineRatingModel, OnlineStep
from streams.rules import movie_event_problem
from streams.store import Checks, Earlier, FeatureTablesIO, FenceMove, Op, logaddexp

__all__ = ["BatchPlan", "Carried", "DeadLetterOut", "ImpressionProcessor", "Message", "MovieProcessor", "Processor",
           "RatingProcessor", "commit_plan", "merge_plans"]  # fmt: skip

log = logging.getLogger(__name__)

#: ``rs:challenger`` ``reason`` of a request from the online model's drift detector.
CHALLENGE_REASON = "drift: ADWIN alarm on the online model's absolute rating error"


@dataclass(slots=True)
class Message:
    """One consumed message, as the processor needs it."""

    topic: str
    partition: int
    offset: int
    value: bytes
    timestamp_ms: int = 0  #: the producer's timestamp (CreateTime), for freshness
    #: the Kafka key; the rating contract refuses a rating whose key is not its user's (``key_mismatch``)
    key: bytes | None = None


@dataclass(slots=True)
class Carried:
    """One user as a batch's commit leaves them, in the form :meth:`FeatureTablesIO.read` returns."""

    row: list[Any]  #: the ``FOLD_FIELDS`` values written
    rated: Mapping[int, Earlier]  #: the batch's ratings: movie -> (rating, event ms)
    pushed: list[str]  #: the recent entries pushed, oldest first


@dataclass(slots=True)
class DeadLetterOut:
    """A dead letter to send before the batch commits."""

    key: bytes
    record: dict[str, Any]


@dataclass
class BatchPlan:
    """One batch's atomic write, and what the consumer must do with its positions afterwards."""

    topic: str
    #: {partition: (fence read, None when none; new fence)}, compared and written by the commit script
    fence: FenceMove = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    dead: list[DeadLetterOut] = field(default_factory=list)
    applied: int = 0
    skipped: int = 0
    #: user ids whose state this batch changed (gateway cache invalidation, freshness probes)
    users: list[int] = field(default_factory=list)
    #: log resets detected (the commit re-bases their fences; logged once it succeeded)
    resets: list[LogReset] = field(default_factory=list)
    #: partitions re-based whose records in this batch were not applied: read them again from the beginning
    rewind: list[int] = field(default_factory=list)
    #: {partition: fenced offset F} for batches that started beyond F + 1: nothing applied, re-read from F + 1
    gaps: dict[int, int] = field(default_factory=dict)
    #: the fences read before computing (partitions with none are absent)
    stored: dict[int, Fence] = field(default_factory=dict)
    #: partitions whose fenced record, or first record (the fence's origin), this batch read back unchanged:
    #: the fence holds this log
    verified: list[int] = field(default_factory=list)
    #: the serving model and the written users' (version, model_version) as read: a hot swap that moved
    #: any of them since refuses the commit (re-plan); None: nothing checked (``streams/store.py`` Checks)
    checks: Checks | None = None
    #: the online model's steps this plan made, by (partition, offset, event id): confirmed by its commit
    steps: list[tuple[int, int, str]] = field(default_factory=list)
    #: what the commit leaves of each written user, as a read would return it after the commit: a plan made
    #: before this one commits reads through it (:meth:`RatingProcessor.plan` ``after``)
    carry: dict[int, Carried] = field(default_factory=dict)

    @property
    def plain(self) -> bool:
        """Nothing to do before the commit or after it but follow the fence: no dead letters, resets or seeks."""
        return not (self.dead or self.resets or self.rewind or self.gaps)

    def count_in_stats(self, applied_field: str) -> None:
        """The batch's ``rs:stats`` counts, in its own commit: ``applied_field`` and ``dead_letters``."""
        if self.applied:
            self.ops.append(("C", keys.STATS, applied_field, self.applied))
        if self.dead:
            self.ops.append(("C", keys.STATS, "dead_letters", len(self.dead)))


def merge_plans(topic: str, plans: list[BatchPlan]) -> BatchPlan:
    """One poll's plans, committed one after another, as the one plan the consumer follows: each partition
    moves from its first plan's fence read to its last plan's new fence."""
    merged = BatchPlan(topic, stored=plans[0].stored if plans else {})
    seen: set[int] = set()
    for plan in plans:
        for p, (read, new) in plan.fence.items():
            merged.fence[p] = (merged.fence[p][0] if p in merged.fence else read, new)
        merged.dead += plan.dead
        merged.applied += plan.applied
        merged.skipped += plan.skipped
        merged.users += [u for u in plan.users if u not in seen]
        seen.update(plan.users)
        merged.resets += plan.resets
        merged.rewind += plan.rewind
        merged.gaps.update(plan.gaps)
        merged.verified += [p for p in plan.verified if p not in merged.verified]
    return merged


def commit_plan(store: FeatureTablesIO, plan: BatchPlan) -> bool:
    """Apply ``plan`` atomically (False: the fence moved, re-plan); log the log resets it re-based."""
    if not plan.ops and not plan.fence:
        return True
    if not store.commit(plan.topic, plan.fence, plan.ops, plan.checks):
        return False
    for r in plan.resets:
        log.warning(
            "log reset on %s[%d] (%s): fence was offset %d epoch %d, log high watermark now %d; about %d "
            "events of the old log were never applied; re-based to epoch %d",
            r.topic, r.partition, r.reason, r.old.offset, r.old.epoch, r.highwater, r.lost, r.epoch,
        )  # fmt: skip
    return True


def effective_view(view: LogView, ms: list[Message]) -> LogView:
    """``view`` with a high watermark no lower than the batch's own records say (offset of the last + 1).

    A fetch high watermark can lag the records fetched with it (seen on Tansu after a restart, while
    producers batch): taken alone it made a log that holds offset 64 look "shorter" than a fence at 64.
    A record of the current log at offset ``o`` proves the log reaches ``o + 1``.
    """
    top = max((m.offset for m in ms), default=-1)
    if view.highwater is None or top < view.highwater:
        return view
    return replace(view, highwater=top + 1)


def fence_batch(
    plan: BatchPlan, msgs: list[Message], stored: dict[int, Fence], logs: Mapping[int, LogView] | None, now_ms: int
) -> dict[int, int]:
    """The offset fence, with the log's identity (:mod:`streams.log_identity`): which messages are fresh.

    Fills ``plan.fence`` (and ``skipped``, ``resets``, ``rewind``, ``gaps``) and returns, per partition,
    the offset a message must exceed to be applied (a partition left for a re-read gets ``sys.maxsize``).
    ``logs`` are the consumer's views of the partitions' logs; a partition in ``logs`` without messages is
    still checked (a reset shows even while the new log is empty).
    """
    logs = logs or {}
    plan.stored = stored
    by_partition: dict[int, list[Message]] = {}
    for m in msgs:
        by_partition.setdefault(m.partition, []).append(m)
    for p in logs:
        by_partition.setdefault(p, [])
    after: dict[int, int] = {}
    for p, ms in by_partition.items():
        read = stored.get(p)
        fence = read or NO_FENCE
        view = effective_view(logs.get(p) or LogView(), ms)
        at_fence = next((m for m in ms if m.offset == fence.offset), None)
        fp = None if at_fence is None else fingerprint(at_fence.key, at_fence.value, at_fence.timestamp_ms)
        first = ms[0] if ms and ms[0].offset == 0 else None
        fp0 = None if first is None else fingerprint(first.key, first.value, first.timestamp_ms)
        judged = verdict(fence, view, fp, fp0)
        if (fp is not None and fp == fence.fingerprint) or is_same_origin(fence, fp0):
            plan.verified.append(p)
        if judged.is_reset:
            epoch = view.epoch if judged is Verdict.NEW_EPOCH and view.epoch is not None else fence.epoch + 1
            lost = 0 if judged is Verdict.NEW_EPOCH else lost_estimate(fence, view.seen)
            hw = -1 if view.highwater is None else view.highwater
            plan.resets.append(LogReset(plan.topic, p, judged.value, fence, epoch, hw, lost, now_ms))
            plan.ops.append(("C", keys.STATS, "log_resets", 1))
            if lost:
                plan.ops.append(("C", keys.STATS, "events_lost", lost))
            plan.ops.append(("H", keys.resets(plan.topic), [p, json.dumps({
                "at_ms": now_ms, "reason": judged.value, "old_offset": fence.offset, "old_epoch": fence.epoch,
                "epoch": epoch, "highwater": hw, "lost": lost,
            })]))  # fmt: skip
            fence = Fence(-1, epoch, "", hw)
            plan.fence[p] = (read, fence)
            if judged is not Verdict.NEW_EPOCH and (not ms or ms[0].offset != 0):
                # The new log's first records are not in this batch (the consumer read from the old
                # fence, or only looked at the log's end): apply none of it; the consumer re-reads the
                # partition from its beginning.
                plan.rewind.append(p)
                after[p] = sys.maxsize
                continue
        live = view.highwater is not None
        if ms and live and is_gap(ms[0].offset, fence.offset) and view.gap_checked != fence.offset:
            plan.gaps[p] = fence.offset  # Redis lost its last writes (or a log gap): re-read once from F + 1
            after[p] = sys.maxsize
            continue
        after[p] = fence.offset
        last: Message | None = None
        for m in ms:
            if m.offset <= fence.offset:
                plan.skipped += 1
            elif last is None or m.offset > last.offset:
                last = m
        if last is not None:
            hw = view.highwater if view.highwater is not None else last.offset + 1
            origin = fence.origin or (fp0 or "")  # the first record of a log applied from its beginning
            new = Fence(last.offset, fence.epoch, fingerprint(last.key, last.value, last.timestamp_ms), hw, origin)
            plan.fence[p] = (read, new)
    return after


def lay_over(
    after: BatchPlan,
    carried: Mapping[int, Carried],
    offsets: dict[int, Fence],
    rows: dict[int, list[Any]],
    earlier: dict[int, dict[int, Earlier]],
    recent: dict[int, list[str]],
) -> None:
    """Make a read taken before ``after`` committed the read after it: its new fences, its written users'
    rows and ratings, and their recent lists as its LPUSH + LTRIM leave them (``recent`` holds the whole
    list of every carried user: the read was asked for it)."""
    for p, (_, new) in after.fence.items():
        offsets[p] = new
    for uid, c in carried.items():
        rows[uid] = c.row
        earlier.setdefault(uid, {}).update(c.rated)  # a superset of the batch's pairs: only looked up
        recent[uid] = (c.pushed[::-1] + recent.get(uid, []))[: keys.RECENT_MAX]


def _dead(msg: Message, reason: str, error: str, now_ms: int) -> DeadLetterOut:
    record = {
        "original": bytes(msg.value), "topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
        "reason": reason, "error": error[:1000], "dead_at": now_ms,
    }  # fmt: skip
    return DeadLetterOut(dead_letter_key(msg.topic, msg.partition, msg.offset), record)


class _UserWork:
    """One user's record (:mod:`schemas.user_record`) and fold-in state while a batch is folded in."""

    __slots__ = ("rated", "read", "rec", "recent", "rt", "seen", "state")

    def __init__(self, row: list[Any], pick: Callable[[str | None], tuple[ModelRuntime, UserState]]) -> None:
        """``row``: the stored ``FOLD_FIELDS``; ``pick``: model version -> (the model the state belongs to,
        its empty state); RecordError when they do not decode or fit the model."""
        self.rec = rec = decode_fold_row(row)
        self.rt, cold = pick(rec.model_version)
        #: (version, model_version) as stored, '' where absent: the commit's check (BatchPlan.checks)
        self.read = ("" if row[0] is None else text(row[0]), rec.model_version or "")
        if rec.pre is None:
            self.state = cold
        elif rec.pre.shape != cold.pre.shape:
            raise RecordError(f"pre has {rec.pre.shape[0]} values, the model's hidden size is {cold.pre.shape[0]}")
        else:
            self.state = UserState(rec.pre, rec.norm2, rec.n_events)
        self.rated: dict[int, tuple[float, int]] = {}  #: this batch's ratings: movie -> (rating, event ms)
        self.recent: list[str] = []
        self.seen: set[str] = set()  #: this batch's entries of ``recent`` (a duplicate within one batch)


class RatingProcessor:
    """Plans and commits batches of RatingEvents (see the module docstring)."""

    def __init__(
        self,
        runtime: ModelRuntime,
        store: FeatureTablesIO,
        *,
        topic: str,
        min_ts_ms: int,
        max_future_ms: int,
        half_life_s: float,
        probe_user_base: int = Settings.model_fields["probe_user_base"].default,
        online: OnlineRatingModel | None = None,
        clock: Callable[[], float] = time.time,
        models: ModelSet | None = None,
        ask_challenger: bool = True,
        attribution_window_s: float = Settings.model_fields["attribution_window_s"].default,
    ) -> None:
        """``runtime``: the model new users start on, until ``rs:model`` names another (a hot swap);
        ``models``: where the models users' states name are loaded from (None: ``runtime`` only);
        ``ask_challenger``: count drift alarms into ``rs:challenger`` (the seed does not: the batch model was
        trained on the HISTORY it folds, so an alarm there asks nothing of retraining)."""
        self.runtime = runtime
        self.models = models
        self.store = store
        self.topic = topic
        self.min_ts_ms = min_ts_ms
        self.max_future_ms = max_future_ms
        self.limits = RatingLimits(min_ts_ms, max_future_ms, probe_user_base)
        self.decay = math.log(2.0) / half_life_s
        #: the item prior's half-life (None: the model has no prior, ``rs:items:prior`` is not kept)
        self.prior_half_life_s = runtime.item_prior["half_life_s"] if runtime.has_item_prior else None
        self.prior_decay = None if self.prior_half_life_s is None else math.log(2.0) / self.prior_half_life_s
        self.online = online if online is not None else OnlineRatingModel()
        self.window_ms = int(attribution_window_s * 1000)
        #: what the online model did for each event of the last plan not committed yet, by (partition, offset,
        #: event id): a batch planned again (its commit failed: the fence moved, or Redis went away) reuses
        #: these steps, so the model and the rs:online counters see each event once, as a clean run does
        self._unconfirmed: dict[tuple[int, int, str], OnlineStep] = {}
        self.ask_challenger = ask_challenger
        self.clock = clock
        self._codec = codec_for("RatingEvent")
        #: per model version: its cold state and its side-feature encoder (new movies' rows, by the model's
        #: own feature names and year scale)
        self._cold: dict[str, UserState] = {}
        self._side: dict[str, SideEncoder] = {}
        self._unresolved: set[str] = set()  #: versions named by states but not loadable (warned once)
        self._serving_read = ""  #: ``rs:model`` ``serving`` as the batch being planned read it

    def model_for(self, version: str | None) -> ModelRuntime:
        """The runtime of a state's ``model_version`` (None: a new user, the serving model).

        A version that cannot be loaded (its folder is gone; a state written by a test model) folds with the
        serving model, as before versions were followed, with one warning per version.
        """
        if version is None or version == self.runtime.version:
            return self.runtime
        rt = self.models.get(version) if self.models is not None else None
        if rt is None:
            if version not in self._unresolved:
                self._unresolved.add(version)
                log.warning("states of model %s are folded with the serving model %s: %s is not loadable",
                            version, self.runtime.version, version)  # fmt: skip
            return self.runtime
        return rt

    def follow(self, serving: str | None) -> None:
        """Make ``serving`` (``rs:model``) the model new users start on, when it is loadable."""
        if serving is None or serving == self.runtime.version:
            return
        rt = self.model_for(serving)
        if rt is self.runtime:
            return
        log.info("serving model %s -> %s (hot swap)", self.runtime.version, rt.version)
        self.runtime = rt
        if rt.has_item_prior:  # swap_problem() keeps the half-life; a model without a prior keeps none
            self.prior_half_life_s = rt.item_prior["half_life_s"]
            self.prior_decay = math.log(2.0) / self.prior_half_life_s

    def _pick(self, version: str | None) -> tuple[ModelRuntime, UserState]:
        """(the model of a state's ``model_version``, that model's empty state)."""
        rt = self.model_for(version)
        cold = self._cold.get(rt.version)
        if cold is None:
            cold = self._cold[rt.version] = cold_state(rt.weights)
        return rt, cold

    def _side_of(self, rt: ModelRuntime) -> SideEncoder:
        side = self._side.get(rt.version)
        if side is None:
            side = self._side[rt.version] = SideEncoder.from_metadata(rt.metadata, rt.side_in.shape[0])
        return side

    @property
    def side(self) -> SideEncoder:
        """The serving model's side-feature encoder."""
        return self._side_of(self.runtime)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _add_announced(self, movie_ids: list[int], rt: ModelRuntime | None = None) -> None:
        """Give movies announced by a MovieEvent (``rs:movie:{mid}``) rows in ``rt`` (default: the serving
        model) from their side features.

        An announcement that does not decode is logged and skipped: its ratings stay ``unknown_movie``.
        """
        rt = rt or self.runtime
        side = self._side_of(rt)
        for mid, row in self.store.read_movies(movie_ids).items():
            try:
                movie = decode_movie(row)
            except RecordError as exc:
                log.warning("%s: %s", keys.movie(mid), exc)
                continue
            rt.add_item(mid, side.vector(movie.genres, movie.year, movie.tags))

    # --- the plan -------------------------------------------------------------------
    def plan(
        self, msgs: list[Message], logs: Mapping[int, LogView] | None = None, after: BatchPlan | None = None
    ) -> BatchPlan:
        """The batch's ops and fence; ``logs``: the consumer's view of each partition's log (:func:`fence_batch`).

        ``after``: a plan whose commit may not have run yet (it is in flight while this one is planned, and
        this one commits only once it has). The read sees the store either before or after that commit (each
        is one atomic script); before it, ``after``'s fences and written users (:attr:`BatchPlan.carry`) are
        laid over the read, so this plan is the one a read after the commit gives. Should ``after`` be
        refused, this plan fails its fence too (it expects ``after``'s) and must be planned again.
        """
        now_ms = int(self.clock() * 1000)
        plan = BatchPlan(self.topic)
        decoded: list[tuple[Message, dict[str, Any]]] = []
        dead: list[tuple[Message, DeadLetterOut]] = []
        decode = self._codec.decode
        for m in msgs:
            try:
                ev = decode(m.value)
            except DecodeError as exc:
                dead.append((m, _dead(m, "undecodable", str(exc), now_ms)))
                continue
            decoded.append((m, ev))

        index_of = self.runtime.index_of
        unknown = sorted({ev["movie_id"] for _, ev in decoded if ev["movie_id"] not in index_of})
        if unknown:
            self._add_announced(unknown)
        valid: list[tuple[Message, dict[str, Any]]] = []
        limits, known = self.limits, index_of.__contains__
        for m, ev in decoded:
            refusal = rating_verdict(ev, m.key, now_ms=now_ms, limits=limits, known_movie=known)
            if refusal is None:
                valid.append((m, ev))
            else:
                dead.append((m, _dead(m, refusal.reason, refusal.detail, now_ms)))

        pairs: dict[int, list[int]] = {}
        for _, ev in valid:
            pairs.setdefault(ev["user_id"], []).append(ev["movie_id"])
        users = list(pairs)
        carried = {} if after is None else {u: after.carry[u] for u in users if u in after.carry}
        offsets, rows, earlier, recent, serving = self.store.read(self.topic, users, pairs, carried)
        if after is not None and after.fence and all(offsets.get(p) == read for p, (read, _) in after.fence.items()):
            lay_over(after, carried, offsets, rows, earlier, recent)
        self.follow(serving)
        self._serving_read = serving or ""

        # Rule: a message at or below its partition's stored offset was applied already, if that offset
        # still fences this log (fence_batch: a reset log is re-based and applied from its first record).
        fenced = fence_batch(plan, msgs, offsets, logs, now_ms)
        plan.dead = [d for m, d in dead if m.offset > fenced.get(m.partition, -1)]
        fresh = [(m, ev) for m, ev in valid if m.offset > fenced.get(m.partition, -1)]
        held = () if after is None else after.steps
        self._fold(fresh, rows, earlier, {u: set(v) for u, v in recent.items()}, plan, held)
        return plan

    def _fold(  # noqa: C901 - the per-event fold, kept in one frame: it runs once per event on the hot path
        self,
        events: list[tuple[Message, dict[str, Any]]],
        rows: dict[int, list[Any]],
        earlier: dict[int, dict[int, Earlier]],
        recent: dict[int, set[str]],
        plan: BatchPlan,
        held: Iterable[tuple[int, int, str]] = (),
    ) -> None:
        """Fold ``events`` in; an event already in its user's recent list (same movie, rating and event time)
        is a redelivered duplicate and is skipped (``duplicates_skipped``), whatever offset it came at.

        ``held``: the online steps of a plan in flight, kept unconfirmed beside this plan's."""
        decay = self.decay
        prior_decay = self.prior_decay if self.prior_decay is not None else 0.0
        learn = self.online.learn_one
        unconfirmed, planned = self._unconfirmed, {}
        ops_hits: list[Op] = []  # one attribution op per applied event, after the user and item writes
        work: dict[int, _UserWork] = {}
        items: dict[int, list[float]] = {}  # mid -> [count, sum, trending x, prior x]
        max_ts: int | None = None
        abs_sum = sq_sum = 0.0
        alarm_ts = 0  # the event time of the batch's latest drift alarm
        drifts = learned = 0  # learned: events that feed the item tables, the prior and the online model
        refused = 0  # events of users whose stored record does not decode (dead letters)
        duplicates = 0  # events already in their user's recent list
        for _m, ev in events:
            uid, mid, r, ts = ev["user_id"], ev["movie_id"], ev["rating"], ev["event_ts"]
            w = work.get(uid)
            if w is None:
                try:
                    w = work[uid] = _UserWork(rows[uid], self._pick)
                except RecordError as exc:  # left as it is; the event is a dead letter saying why
                    refused += 1
                    plan.dead.append(_dead(_m, "corrupt_user_state", f"{keys.user(uid)}: {exc}", self._now_ms()))
                    continue
            idx = w.rt.index_of.get(mid)
            if idx is None:  # the user's state is on a model that lacks this movie: give it its announced row
                self._add_announced([mid], w.rt)
                idx = w.rt.index_of.get(mid)
                if idx is None:
                    refused += 1
                    plan.dead.append(_dead(_m, "unknown_movie", f"movie {mid} is not in model {w.rt.version}, "
                                           f"which user {uid}'s state belongs to", self._now_ms()))  # fmt: skip
                    continue
            before: Earlier | None = w.rated.get(mid)
            if before is None:
                before = earlier[uid].get(mid)
            entry = encode_recent(mid, r, ts)
            if before is not None and (before == (r, ts) or entry in w.seen or entry in recent.get(uid, ())):
                plan.skipped += 1  # the same rating event again (a producer's retry, a log re-read)
                duplicates += 1
                continue
            prev = None if before is None else before[0]
            w.state = fold_in(w.rt.weights, w.state, idx, r, prev)
            w.rec.observe(r, ts)
            w.rated[mid] = (r, ts)
            w.recent.append(entry)
            w.seen.add(entry)
            if ev["source"] == PROBE_SOURCE:
                continue  # a freshness probe changes its own user's state and nothing shared
            learned += 1
            x = decay * ts / 1000.0
            xp = prior_decay * ts / 1000.0
            max_ts = ts if max_ts is None or ts > max_ts else max_ts
            agg = items.get(mid)
            if agg is None:
                items[mid] = [1, r, x, xp]
            else:
                agg[0] += 1
                agg[1] += r
                agg[2] = logaddexp(agg[2], x)
                agg[3] = logaddexp(agg[3], xp)
            ops_hits.append(("R", (keys.user_impressions(uid),), mid, r, ts, self.window_ms))
            once = (_m.partition, _m.offset, ev["event_id"])
            step = unconfirmed.get(once)
            if step is None:
                step = learn(uid, mid, r)
            planned[once] = step
            abs_sum += step.abs_error
            sq_sum += step.abs_error * step.abs_error
            if step.drift:
                drifts += 1
                alarm_ts = ts

        kept = {k: unconfirmed[k] for k in held if k in unconfirmed}
        self._unconfirmed = {**kept, **planned}
        plan.steps = list(planned)
        ops = plan.ops
        checked: list[tuple[str, str, str]] = []
        for uid, w in work.items():
            if not w.recent:
                continue  # every event of this user was a duplicate: nothing to write
            checked.append((keys.user(uid), *w.read))
            rec, state = w.rec, w.state
            rec.pre, rec.norm2, rec.n_events = state.pre, state.norm2, state.n_events
            rec.mu, rec.logvar = encode(w.rt.weights, state)
            rec.model_version = w.rt.version
            fields = encode_user(rec)
            pushed = w.recent[-keys.RECENT_MAX :]
            ops.append(("H", keys.user(uid), fields))
            ops.append(("H", keys.user_rated(uid), encode_rated(w.rated)))
            ops.append(("L", keys.user_recent(uid), pushed))
            written = dict(zip(fields[::2], fields[1::2], strict=True))
            plan.carry[uid] = Carried([written.get(f) for f in FOLD_FIELDS], w.rated, pushed)
        prior = self.prior_decay is not None
        for mid, (cnt, total, x, xp) in items.items():
            ops.append(("I", keys.item(mid), mid, cnt, total))
            ops.append(("T", mid, x))
            if prior:
                ops.append(("P", mid, xp))
        applied = len(events) - refused - duplicates
        if learned and prior:
            ops.append(("X", keys.ITEMS_PRIOR_CLOCK, "event_ms", max_ts))
            ops.append(("C", keys.ITEMS_PRIOR_CLOCK, "events", learned))
            ops.append(("H", keys.ITEMS_PRIOR_CLOCK, ["half_life_s", self.prior_half_life_s]))
        ops += ops_hits
        if applied:
            ops.append(("C", keys.STATS, "events_applied", applied))
        if learned:
            ops.append(("C", keys.ONLINE, "n", learned))
            ops.append(("F", keys.ONLINE, "abs_sum", abs_sum))
            ops.append(("F", keys.ONLINE, "sq_sum", sq_sum))
            if drifts:
                ops.append(("C", keys.ONLINE, "drifts", drifts))
            if drifts and self.ask_challenger:  # an alarm asks continual training for a challenger (online.py)
                ops.append(("C", keys.CHALLENGER, "requested", drifts))
                ops.append(("X", keys.CHALLENGER, "last_alarm_ms", alarm_ts))
                ops.append(("H", keys.CHALLENGER, ["reason", CHALLENGE_REASON]))
            ops.append(("O",))
        if plan.dead:
            ops.append(("C", keys.STATS, "dead_letters", len(plan.dead)))
        if plan.skipped:
            ops.append(("C", keys.STATS, "duplicates_skipped", plan.skipped))
        plan.applied = applied
        plan.users = [uid for uid, w in work.items() if w.recent]
        plan.checks = (self._serving_read, checked)

    # --- the commit -----------------------------------------------------------------
    def commit(self, plan: BatchPlan) -> bool:
        """Apply the plan atomically; False when the fence failed (re-plan and retry)."""
        done = commit_plan(self.store, plan)
        if done:
            self.confirm(plan)
        return done

    def confirm(self, plan: BatchPlan) -> None:
        """``plan`` committed: its online steps are done (a plan made meanwhile keeps its own)."""
        for k in plan.steps:
            self._unconfirmed.pop(k, None)

    def run(self, msgs: list[Message], send_dead: Callable[[list[DeadLetterOut]], None] | None = None) -> BatchPlan:
        """Plan, send dead letters, commit; re-plan while the fence fails (the synchronous path)."""
        while True:
            plan = self.plan(msgs)
            if send_dead is not None and plan.dead:
                send_dead(plan.dead)
            if self.commit(plan):
                return plan


def _fresh_events(
    store: FeatureTablesIO,
    plan: BatchPlan,
    msgs: list[Message],
    logs: Mapping[int, LogView] | None,
    now_ms: int,
    codec: SchemaCodec,
    problem: Callable[[dict[str, Any]], str | None],
    reason: str,
) -> Iterator[tuple[Message, dict[str, Any]]]:
    """The batch's messages above the offset fence (see RatingProcessor.plan), decoded and checked by
    ``problem``; the others become dead letters in ``plan`` (``undecodable``, or ``reason`` with the problem)."""
    offsets, *_ = store.read(plan.topic, [], {})
    after = fence_batch(plan, msgs, offsets, logs, now_ms)
    for m in msgs:
        if m.offset <= after.get(m.partition, -1):
            continue
        try:
            ev = codec.decode(m.value)
        except DecodeError as exc:
            plan.dead.append(_dead(m, "undecodable", str(exc), now_ms))
            continue
        why = problem(ev)
        if why is not None:
            plan.dead.append(_dead(m, reason, why, now_ms))
            continue
        yield m, ev


class MovieProcessor:
    """Plans and commits batches of MovieEvents: ``rs:movie:{mid}`` plus the model's new item rows."""

    def __init__(self, runtime: ModelRuntime, store: FeatureTablesIO, *, topic: str,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.runtime = runtime
        self.store = store
        self.topic = topic
        self.clock = clock
        self._codec = codec_for("MovieEvent")

    def plan(self, msgs: list[Message], logs: Mapping[int, LogView] | None = None) -> BatchPlan:
        now_ms = int(self.clock() * 1000)
        plan = BatchPlan(self.topic)
        fresh = _fresh_events(self.store, plan, msgs, logs, now_ms, self._codec, movie_event_problem, "bad_movie_event")
        for m, ev in fresh:
            try:
                record = encode_movie(ev["title"], ev["genres"], ev["year"], ev["tags"], now_ms)
            except RecordError as exc:
                plan.dead.append(_dead(m, "bad_movie_event", str(exc), now_ms))
                continue
            plan.ops.append(("H", keys.movie(ev["movie_id"]), record))
            plan.applied += 1
        plan.count_in_stats("movies_applied")
        return plan

    def commit(self, plan: BatchPlan) -> bool:
        return commit_plan(self.store, plan)


#: Longest list an impression may carry (the gateway serves k <= 100).
MAX_IMPRESSION_ITEMS = 100


def impression_problem(ev: Mapping[str, Any]) -> str | None:
    """Why an ImpressionEvent cannot be attributed, or None.

    >>> impression_problem({"user_id": 3, "movie_ids": [1, 2], "served_ms": 5, "variant": "a", "segment": "new"})
    >>> impression_problem({"user_id": 0, "movie_ids": [], "served_ms": 5, "variant": "a", "segment": "new"})
    'user_id 0 is not a positive id'
    """
    if ev["user_id"] < 1:
        return f"user_id {ev['user_id']} is not a positive id"
    mids = ev["movie_ids"]
    if len(mids) > MAX_IMPRESSION_ITEMS or any(m < 1 for m in mids) or len(set(mids)) != len(mids):
        return f"movie_ids must be at most {MAX_IMPRESSION_ITEMS} distinct positive ids"
    if ev["served_ms"] < 0:
        return f"served_ms {ev['served_ms']} is negative"
    if not ev["variant"] or not ev["segment"] or any(c in ev["variant"] + ev["segment"] for c in ": ,"):
        return "variant and segment must be non-empty, without ':', ',' or spaces"
    novelty = ev.get("novelty")
    if novelty is not None and not (math.isfinite(novelty) and novelty >= 0):
        return f"novelty {novelty} is not a finite self-information (>= 0)"
    return None


class ImpressionProcessor:
    """Plans and commits batches of ImpressionEvents: each one counted in its arm and attributed on event time.

    The join with the ratings happens inside the commit (the ``M`` and ``R`` ops, streams/store.py), so it
    does not depend on which topic is read first: an impression finds the ratings already in the user's
    ``rated`` hash, a later rating finds the impression among the user's kept ones; a (list, movie) pair is a
    hit once. Like every batch, the commit moves the partition's offset fence in the same atomic step.
    """

    def __init__(self, store: FeatureTablesIO, *, topic: str,
                 window_s: float = Settings.model_fields["attribution_window_s"].default,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store = store
        self.topic = topic
        self.window_ms = int(window_s * 1000)
        self.clock = clock
        self._codec = codec_for("ImpressionEvent")

    def plan(self, msgs: list[Message], logs: Mapping[int, LogView] | None = None) -> BatchPlan:
        now_ms = int(self.clock() * 1000)
        plan = BatchPlan(self.topic)
        for _m, ev in _fresh_events(self.store, plan, msgs, logs, now_ms, self._codec, impression_problem,
                                    "bad_impression"):  # fmt: skip
            uid, arm = ev["user_id"], f"{ev['variant']}:{ev['segment']}"
            op_keys = (
                keys.user_impressions(uid),
                keys.user_rated(uid),
                keys.experiment(arm),
                keys.experiment(arm, "users"),
                keys.experiment(arm, "movies"),
                keys.EXPERIMENT_ARMS,
                keys.user_impressions_order(uid),
            )
            novelty = ev.get("novelty")
            plan.ops.append(("M", op_keys, ev["impression_id"], ev["served_ms"], self.window_ms, arm, uid,
                             keys.IMPRESSIONS_KEPT, "" if novelty is None else repr(float(novelty)),
                             list(ev["movie_ids"])))  # fmt: skip
            plan.applied += 1
        plan.count_in_stats("impressions_applied")
        return plan

    def commit(self, plan: BatchPlan) -> bool:
        return commit_plan(self.store, plan)


#: Any of the worker's processors (one per topic).
Processor = RatingProcessor | MovieProcessor | ImpressionProcessor
