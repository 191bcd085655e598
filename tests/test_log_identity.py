"""The log-identity rules (a numbered case table) and the processor's fence behaviour on an in-memory store.

The oracles are the rules' own definitions (streams/log_identity.py) and "every record of every log applied
exactly once": each test compares the processor's state with a reference processor fed each log's records once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.runtime import ModelRuntime
from reelstream.redis_client import redis_client
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.wire import codec_for
from streams.events import rating_event, user_key
from streams.log_identity import (
    NO_FENCE,
    Fence,
    LogView,
    Verdict,
    did_highwater_fall,
    fingerprint,
    is_gap,
    is_log_shorter,
    lost_estimate,
    verdict,
)
from streams.processor import Message, RatingProcessor
from streams.store import FeatureTablesIO, MemoryFeatureTables, RedisFeatureTables, redis_snapshot
from tests.stream_support import diff_states

A, B = fingerprint(b"1", b"a", 1), fingerprint(b"1", b"b", 1)

#: (fence, view, fingerprint of the record now at the fenced offset, expected verdict)
CASES = [
    # 1. nothing fenced yet: any log is fine
    (NO_FENCE, LogView(highwater=5), None, Verdict.OK),
    # 2. the log goes on past the fence
    (Fence(31, 0, A, 32), LogView(highwater=40), None, Verdict.OK),
    # 3. the fenced record is the last one of the log
    (Fence(31, 0, A, 32), LogView(highwater=32), None, Verdict.OK),
    # 4. the log ends at the fenced offset: the fenced record is gone
    (Fence(31, 0, A, 32), LogView(highwater=31), None, Verdict.LOG_SHORTER),
    # 5. a restarted memory-only broker: two records where 32 were
    (Fence(31, 0, A, 32), LogView(highwater=2), None, Verdict.LOG_SHORTER),
    # 6. no high watermark known (a seed or a rebuild): nothing to compare
    (Fence(31, 0, A, 32), LogView(), None, Verdict.OK),
    # 7. the record at the fence is the one applied there
    (Fence(31, 0, A, 32), LogView(highwater=40), A, Verdict.OK),
    # 8. another record sits at the fenced offset: the log was replaced by a longer one
    (Fence(31, 0, A, 32), LogView(highwater=40), B, Verdict.RECORD_REPLACED),
    # 9. a fence written before identities (no fingerprint) cannot be contradicted
    (Fence(31), LogView(highwater=40), B, Verdict.OK),
    # 10. the caller states a later incarnation (a rebuild from the archive): it beats every other rule
    (Fence(31, 0, A, 32), LogView(highwater=2, epoch=1), B, Verdict.NEW_EPOCH),
    # 11. the same incarnation stated: the other rules decide
    (Fence(31, 1, A, 32), LogView(highwater=40, epoch=1), A, Verdict.OK),
    # 12. shorter and replaced at once: the shorter log is reported (checked first)
    (Fence(31, 0, A, 32), LogView(highwater=2), B, Verdict.LOG_SHORTER),
    # 13. a fence just re-based (nothing applied in the new log): an empty new log is fine
    (Fence(-1, 1, "", 0), LogView(highwater=0), None, Verdict.OK),
    # 14. the fenced record itself was read back: a high watermark below it lags (Tansu) and is overruled
    (Fence(64, 1, A, 65), LogView(highwater=40), A, Verdict.OK),
]


@pytest.mark.parametrize(("fence", "view", "fp", "expected"), CASES, ids=[f"case{i + 1}" for i in range(len(CASES))])
def test_verdicts(fence: Fence, view: LogView, fp: str | None, expected: Verdict) -> None:
    assert verdict(fence, view, fp) is expected


def test_the_smaller_rules() -> None:
    assert is_log_shorter(0, 0) and not is_log_shorter(0, -1) and not is_log_shorter(None, 5)
    assert did_highwater_fall(32, 2) and not did_highwater_fall(2, 32) and not did_highwater_fall(None, 2)
    assert is_gap(5, 2) and not is_gap(3, 2) and not is_gap(0, -1) and is_gap(1, -1)
    assert lost_estimate(Fence(31, 0, A, 32), None) == 0  # everything up to the fence's high watermark applied
    assert lost_estimate(Fence(31, 0, A, 32), 50) == 50 - 32  # 18 records seen beyond the fence, never applied
    assert lost_estimate(Fence(31, 0, A, 40), 35) == 40 - 32
    assert lost_estimate(Fence(31, 0, A, 20), 10) == 0  # floored


def test_fence_identity_round_trips() -> None:
    for fence in (Fence(31, 2, A, 40), Fence(31, 2, A, 40, A), Fence(-1, 1, "", 0), Fence(7), NO_FENCE):
        assert Fence.parse(str(fence.offset), fence.identity().encode()) == fence
    assert Fence(7).identity() == ""  # a fence without identity stores none (and compares with none)
    assert Fence.parse(None, None) == NO_FENCE


# --- the processor's fence on an in-memory store ---------------------------------------------------------

TOPIC = "ratings"
MOVIES = np.arange(1, 41)
TS0 = 1_500_000_000_000


def _processor(store: FeatureTablesIO | None = None) -> RatingProcessor:
    runtime = ModelRuntime.random(MOVIES, seed=1)
    return RatingProcessor(runtime, store or MemoryFeatureTables(), topic=TOPIC, min_ts_ms=0,
                           max_future_ms=10**15, half_life_s=3600.0, clock=lambda: 2_000_000_000.0)  # fmt: skip


def _log(n: int, tag: int, partition: int = 0) -> list[Message]:
    """One incarnation of a partition's log: ``n`` ratings of users whose key lands them on ``partition``."""
    codec = codec_for("RatingEvent")
    rng = np.random.default_rng(tag)
    out = []
    for offset in range(n):
        uid = int(rng.integers(1, 8))
        ts = TS0 + tag * 10**9 + offset * 1000
        ev = rating_event(uid, int(rng.choice(MOVIES)), float(rng.integers(1, 11)) / 2, ts, "live")
        out.append(Message(TOPIC, partition, offset, codec.encode(ev), ts, user_key(uid)))
    return out


def _reference(*logs: list[Message]) -> dict:
    """Every record of every incarnation applied once, in order (offsets renumbered so no fence skips any)."""
    ref = _processor()
    flat = [m for log in logs for m in log]
    ref.run([Message(TOPIC, 0, i, m.value, m.timestamp_ms, m.key) for i, m in enumerate(flat)])
    return ref.store.snapshot()


def _stats(store: MemoryFeatureTables) -> dict:
    return store.hashes.get(keys.STATS, {})


def test_redelivery_and_the_verified_fenced_record_are_skipped() -> None:
    proc, old = _processor(), _log(32, tag=1)
    assert proc.run(old).applied == 32
    plan = proc.plan(old[31:], {0: LogView(highwater=32, seen=32)})  # a seek to the fence F = 31
    assert (plan.applied, plan.skipped, plan.resets, plan.rewind, plan.gaps) == (0, 1, [], [], {})
    assert diff_states(_reference(old), proc.store.snapshot()) == []


def test_a_shorter_new_log_is_re_based_and_applied_once_counting_the_lost_tail() -> None:
    proc, old, new = _processor(), _log(32, tag=1), _log(2, tag=2)
    proc.run(old)
    # the broker restarted empty; the worker had seen the old log reach 40 (8 records never applied)
    plan = proc.plan(new, {0: LogView(highwater=2, seen=40)})
    assert [(r.reason, r.old.offset, r.epoch, r.lost) for r in plan.resets] == [("log_shorter", 31, 1, 8)]
    assert proc.commit(plan) and plan.applied == 2 and not plan.rewind  # the batch starts at 0: applied now
    last, first = (fingerprint(m.key, m.value, m.timestamp_ms) for m in (new[1], new[0]))
    assert Fence.parse(*_fence(proc.store)) == Fence(1, 1, last, 2, first)  # the new log's first record: origin
    again = proc.plan(new, {0: LogView(highwater=2, seen=2)})  # redelivered: nothing twice, no second reset
    assert (again.applied, again.skipped, again.resets) == (0, 2, [])
    assert diff_states(_reference(old, new), proc.store.snapshot()) == []
    assert (_stats(proc.store)["log_resets"], _stats(proc.store)["events_lost"]) == (1, 8)
    record = json.loads(proc.store.hashes[keys.resets(TOPIC)]["0"])
    assert record | {"at_ms": 0} == {"at_ms": 0, "reason": "log_shorter", "old_offset": 31, "old_epoch": 0,
                                     "epoch": 1, "highwater": 2, "lost": 8}  # fmt: skip


def test_the_same_log_read_again_from_its_beginning_is_no_reset() -> None:
    """Tansu answers a fetch beyond its lagging high watermark with OffsetOutOfRange and the consumer reads
    the same log again from offset 0, below the fence and with a high watermark under it: its first record
    is the incarnation's origin, so nothing is re-based; another first record is a new log."""
    proc, log = _processor(), _log(32, tag=1)
    proc.run(log)
    plan = proc.plan(log[:10], {0: LogView(highwater=10, seen=32)})
    assert (plan.resets, plan.applied, plan.skipped, plan.verified) == ([], 0, 10, [0])
    other = _log(10, tag=5)
    plan = proc.plan(other, {0: LogView(highwater=10, seen=32)})
    assert [r.reason for r in plan.resets] == ["log_shorter"] and plan.applied == 10


def test_a_longer_replaced_log_is_found_at_the_fence_and_re_read_from_its_beginning() -> None:
    proc, old, new = _processor(), _log(32, tag=1), _log(50, tag=3)
    proc.run(old)
    plan = proc.plan(new[31:], {0: LogView(highwater=50, seen=32)})  # the seek to F = 31 reads another record
    assert [r.reason for r in plan.resets] == ["record_replaced"] and plan.rewind == [0] and plan.applied == 0
    assert proc.commit(plan)
    plan = proc.plan(new, {0: LogView(highwater=50, seen=50)})  # from the beginning: the whole new log
    assert proc.commit(plan) and plan.applied == 50 and not plan.resets
    assert diff_states(_reference(old, new), proc.store.snapshot()) == []


def test_a_high_watermark_lagging_its_own_records_is_no_reset() -> None:
    """A fetch high watermark below the offsets fetched with it (Tansu after a restart) must not re-base.

    Re-basing there re-read the partition from its beginning and applied those records a second time.
    """
    proc, log = _processor(), _log(80, tag=7)
    proc.run(log[:65])
    plan = proc.plan(log[64:], {0: LogView(highwater=40, seen=65)})  # a seek to F = 64; the records go to 79
    assert (plan.resets, plan.rewind, plan.skipped, plan.applied) == ([], [], 1, 15)
    assert proc.commit(plan)
    plan = proc.plan(log[70:], {0: LogView(highwater=41, seen=80)})  # redelivered beyond F, same stale mark
    assert (plan.resets, plan.rewind, plan.applied) == ([], [], 0)
    assert diff_states(_reference(log), proc.store.snapshot()) == []


def test_an_empty_new_log_is_re_based_without_records() -> None:
    proc, old = _processor(), _log(32, tag=1)
    proc.run(old)
    plan = proc.plan([], {0: LogView(highwater=0, seen=32)})
    assert [r.reason for r in plan.resets] == ["log_shorter"] and plan.rewind == [0]
    assert proc.commit(plan)
    assert Fence.parse(*_fence(proc.store)) == Fence(-1, 1, "", 0)
    new = _log(3, tag=4)
    assert proc.run(new).applied == 3  # later records of the new log: applied from its first
    assert diff_states(_reference(old, new), proc.store.snapshot()) == []


def test_a_gap_is_re_read_once_then_accepted() -> None:
    proc, log = _processor(), _log(20, tag=5)
    proc.run(log[:10])
    plan = proc.plan(log[14:], {0: LogView(highwater=20)})  # Redis lost the writes of offsets 10..13
    assert plan.gaps == {0: 9} and plan.applied == 0 and plan.fence == {}
    plan = proc.plan(log[14:], {0: LogView(highwater=20, gap_checked=9)})  # still there after the re-read
    assert plan.gaps == {} and plan.applied == 6


def test_a_rebuild_states_the_epoch_of_archived_records() -> None:
    proc, old, new = _processor(), _log(32, tag=1), _log(5, tag=6)
    proc.run(old)
    plan = proc.plan(new, {0: LogView(epoch=1)})
    assert [(r.reason, r.lost) for r in plan.resets] == [("new_epoch", 0)] and plan.applied == 5
    assert proc.commit(plan)
    assert proc.plan(new, {0: LogView(epoch=1)}).applied == 0  # the same epoch again: fenced
    assert diff_states(_reference(old, new), proc.store.snapshot()) == []


def _fence(store: MemoryFeatureTables) -> tuple[str, str]:
    return store.hashes[keys.offsets(TOPIC)]["0"], store.hashes[keys.fence(TOPIC)]["0"]


def test_the_lua_script_fences_like_the_dict_store(live_settings: Settings) -> None:
    """The same resets on real Redis: identical state, fence and reset records (the script's KEYS layout)."""
    client = redis_client(live_settings.redis_url)
    in_redis, in_memory = _processor(RedisFeatureTables(client)), _processor()
    old, new = _log(32, tag=1), _log(6, tag=2)
    for proc in (in_redis, in_memory):
        proc.run(old[:20])
        proc.run(old[20:])
        assert proc.commit(proc.plan(new[:4], {0: LogView(highwater=4, seen=35)}))
        assert proc.commit(proc.plan(new, {0: LogView(highwater=6, seen=4)}))
    got, want = redis_snapshot(client), in_memory.store.snapshot()
    assert diff_states(want, got) == []
    for key in (keys.offsets(TOPIC), keys.fence(TOPIC), keys.resets(TOPIC), keys.STATS):
        assert got[key] == want[key], key
    assert in_redis.store.read_fences(TOPIC) == in_memory.store.read_fences(TOPIC)
    client.close()


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_rating_event_seen_again_at_another_offset_is_skipped(backend: str, request: pytest.FixtureRequest) -> None:
    """Event identity beyond the offset fence: a producer's retry or a re-read log brings the same ratings
    (same user, movie, rating and event time) at new offsets; none is folded in twice, on either store."""
    client = redis_client(request.getfixturevalue("live_settings").redis_url) if backend == "redis" else None
    proc = _processor(RedisFeatureTables(client) if client is not None else None)
    old = _log(32, tag=1)
    proc.run(old)
    again = [Message(TOPIC, 0, 32 + m.offset, m.value, m.timestamp_ms, m.key) for m in old]
    plan = proc.plan(again[:5] + again[:5], {0: LogView(highwater=42)})  # twice within one batch too
    assert (plan.applied, plan.skipped) == (0, 10)
    assert proc.commit(plan)
    assert proc.run(again[5:]).applied == 0
    snapshot = redis_snapshot(client) if client is not None else proc.store.snapshot()
    assert diff_states(_reference(old), snapshot) == []
    if client is not None:
        client.close()
