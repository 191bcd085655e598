"""The batch processor against both stores: the Lua script and the dict store agree, redelivery is a no-op,
and the offset fence refuses a stale writer."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from models.runtime import ModelRuntime
from reelstream.settings import Settings
from schemas import redis_keys as keys
from schemas.user_record import pack_rating
from schemas.wire import codec_for
from streams.events import rating_event, user_key
from streams.online import OnlineRatingModel
from streams.processor import Message, RatingProcessor
from streams.store import MemoryFeatureTables, RedisFeatureTables, redis_snapshot
from tests.stream_support import diff_states

TOPIC = "ratings"
RNG = np.random.default_rng(0)
MOVIES = np.arange(1, 201)


def _messages(n: int = 3000, partitions: int = 4) -> list[Message]:
    codec = codec_for("RatingEvent")
    offsets = [0] * partitions
    out = []
    for i in range(n):
        user = int(RNG.integers(1, 60))
        p = user % partitions
        ev = rating_event(user, int(RNG.choice(MOVIES)), float(RNG.integers(1, 11)) / 2, 1_400_000_000_000 + i * 60_000,
                          "replay")  # fmt: skip
        out.append(Message(TOPIC, p, offsets[p], codec.encode(ev), key=user_key(user)))
        offsets[p] += 1
    return out


def _processor(store) -> RatingProcessor:
    runtime = ModelRuntime.random(MOVIES, seed=3)
    runtime.metadata["item_prior"] = {"beta": 0.5, "half_life_s": 7200.0}  # keeps rs:items:prior too
    return RatingProcessor(runtime, store, topic=TOPIC, min_ts_ms=0,
                           max_future_ms=10**15, half_life_s=3600.0, online=OnlineRatingModel(seed=1))  # fmt: skip


def test_lua_and_dict_stores_agree_and_redelivery_changes_nothing(live_settings: Settings) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    msgs = _messages()
    in_redis, in_memory = _processor(RedisFeatureTables(client)), _processor(MemoryFeatureTables())
    for i in range(0, len(msgs), 700):
        in_redis.run(msgs[i : i + 700])
    in_memory.run(msgs)  # one big batch: batching must not change the result
    assert diff_states(in_memory.store.snapshot(), redis_snapshot(client)) == []
    clock = client.hgetall(keys.ITEMS_PRIOR_CLOCK)  # the item prior: its own zset and clock, same script
    assert clock[b"event_ms"] == b"%d" % (1_400_000_000_000 + (len(msgs) - 1) * 60_000)
    assert int(clock[b"events"]) == len(msgs) and float(clock[b"half_life_s"]) == 7200.0
    assert client.zcard(keys.ITEMS_PRIOR) == client.zcard(keys.ITEMS_TRENDING) > 0
    assert client.zscore(keys.ITEMS_PRIOR, 1) != client.zscore(keys.ITEMS_TRENDING, 1)
    before = redis_snapshot(client)
    plan = in_redis.run(msgs[100:2500])  # a redelivery after a crash
    assert (plan.applied, plan.skipped) == (0, 2400)
    after = redis_snapshot(client)
    assert diff_states(before, after) == []
    assert after["rs:stats"]["duplicates_skipped"] == 2400


def test_the_offset_fence_refuses_a_writer_whose_reads_are_stale(live_settings: Settings) -> None:
    client = redis.Redis.from_url(live_settings.redis_url)
    msgs = [m for m in _messages(400) if m.partition == 0]
    a, b = _processor(RedisFeatureTables(client)), _processor(RedisFeatureTables(client))
    stale = a.plan(msgs[:50])  # worker A read the state, then lost the partition ...
    assert b.run(msgs[:80]).applied == 80  # ... to worker B, which applied more
    assert a.commit(stale) is False  # A's late commit is refused: nothing is applied twice
    assert int(client.hget("rs:stats", "events_applied")) == 80
    assert a.run(msgs).applied == len(msgs) - 80  # re-planned: only what B had not applied


PROBE = Settings.model_fields["probe_user_base"].default  # the processor's default probe range


def _one(offset: int, user: int, movie: int, *, key: bytes | str | None = "user", source: str = "replay") -> Message:
    ev = rating_event(user, movie, 4.0, 1_500_000_000_000 + offset, source)  # type: ignore[arg-type]
    return Message(TOPIC, 0, offset, codec_for("RatingEvent").encode(ev), key=user_key(user) if key == "user" else key)


def test_a_rating_keyed_other_than_its_user_goes_to_the_dead_letters() -> None:
    processor = _processor(MemoryFeatureTables())
    msgs = [_one(0, 5, 1, key=b"6"), _one(1, 5, 2, key=None), _one(2, 5, 3), _one(3, PROBE, 4, source="live")]
    plan = processor.run(msgs)
    assert [(d.record["offset"], d.record["reason"]) for d in plan.dead] == [
        (0, "key_mismatch"), (1, "key_mismatch"), (3, "reserved_user"),
    ]  # fmt: skip
    assert plan.dead[0].record["original"] == msgs[0].value and "b'6'" in plan.dead[0].record["error"]
    snap = processor.store.snapshot()
    assert snap[keys.user(5)]["version"] == 1.0  # only the keyed one applied:
    assert snap[keys.user_rated(5)] == {"3": float(pack_rating(4.0, 1500000000002))}  # numbers normalised
    assert keys.user(PROBE) not in snap
    assert snap[keys.offsets(TOPIC)]["0"] == 3.0  # refused messages are fenced too: a redelivery repeats nothing


def test_probe_events_change_the_probe_users_state_and_nothing_shared() -> None:
    processor = _processor(MemoryFeatureTables())
    processor.run(_messages(300))
    before = processor.store.snapshot()
    online_n = processor.online.n
    probes = [_one(10_000 + i, PROBE + i % 3, int(MOVIES[i]), source="probe") for i in range(6)]
    plan = processor.run(probes)
    assert (plan.applied, plan.dead) == (6, [])
    after = processor.store.snapshot()
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    probe_keys = {f(PROBE + i) for i in range(3) for f in (keys.user, keys.user_rated, keys.user_recent)}
    shared = (keys.ITEMS_POPULAR, keys.ITEMS_TRENDING, keys.ITEMS_PRIOR, keys.ITEMS_PRIOR_CLOCK, keys.ONLINE)
    assert set(shared) <= set(before)  # each exists, so "unchanged" means something
    assert {k for k in changed if k in shared or k.startswith(keys.item(0)[:-1])} == set()
    assert {k for k in changed if k.startswith(keys.user(0)[:-1])} == probe_keys
    assert after[keys.STATS]["events_applied"] == before[keys.STATS]["events_applied"] + 6
    assert processor.online.n == online_n  # the in-process online model learned nothing either
    assert after[keys.user(PROBE)]["last_ms"] == 1_500_000_000_000 + 10_003.0  # what FreshnessProbe reads back


def test_a_resent_event_is_a_duplicate_however_many_ratings_came_after_it(live_settings: Settings) -> None:
    """The replay resumed after a broker restart sends again what the lost log held: new offsets, same events.
    More than RECENT_MAX of them for one user (a MovieLens rating session) must all be recognised."""
    codec = codec_for("RatingEvent")
    n = keys.RECENT_MAX + 10
    events = [rating_event(5, int(m), 4.0, 1_400_000_000_000 + int(m) * 1000, "replay") for m in MOVIES[:n]]
    first = [Message(TOPIC, 0, i, codec.encode(ev), key=user_key(5)) for i, ev in enumerate(events)]
    again = [Message(TOPIC, 0, n + i, codec.encode(ev), key=user_key(5)) for i, ev in enumerate(events)]
    rerate = rating_event(5, int(MOVIES[0]), 2.0, 1_400_000_000_000 + 10**6, "live")  # a real re-rating
    client = redis.Redis.from_url(live_settings.redis_url)
    for store in (RedisFeatureTables(client), MemoryFeatureTables()):
        proc = _processor(store)
        assert proc.run(first).applied == n
        plan = proc.run(again)
        assert (plan.applied, plan.skipped) == (0, n)
        assert proc.run([Message(TOPIC, 0, 2 * n, codec.encode(rerate), key=user_key(5))]).applied == 1
    assert int(client.hget(keys.user(5), "n")) == n + 1


def test_zset_ops_repeating_a_movie_and_past_one_chunk_apply_in_order_as_the_dict_store_does(
    live_settings: Settings,
) -> None:
    """The script defers popular/trending/prior to one ZMSCORE + ZADD per 1000 movies: a movie named twice in
    one commit must still chain (count added twice, ``logaddexp`` twice), and 2500 movies span three chunks."""
    client = redis.Redis.from_url(live_settings.redis_url)
    redis_store, memory = RedisFeatureTables(client), MemoryFeatureTables()
    ops = [("T", 7, 1.5), ("P", 7, -2.0), ("I", keys.item(7), 7, 2, 7.5), ("T", 7, 3.25), ("P", 7, 0.5),
           ("I", keys.item(7), 7, 1, 4.0)]  # fmt: skip
    ops += [(kind, m, m / 1000.0) for m in range(1, 2501) for kind in ("T", "P")]
    ops += [("I", keys.item(m), m, m % 5 + 1, 3.5) for m in range(1, 2501)]
    for store in (redis_store, memory):
        assert store.commit(TOPIC, {}, ops)
        assert store.commit(TOPIC, {}, ops[:6])  # again: the scores read back are chained onto
    snap = redis_snapshot(client)
    assert diff_states(memory.snapshot(), snap) == []
    assert snap[keys.ITEMS_POPULAR]["7"] == (2 + 1) + (7 % 5 + 1) + (2 + 1)
    assert len(snap[keys.ITEMS_TRENDING]) == len(snap[keys.ITEMS_PRIOR]) == 2500


def test_a_drift_alarm_asks_for_a_challenger_once_per_alarm_whatever_the_batching() -> None:
    """The online model's ADWIN alarms (its error jumps when every user's ratings flip) become
    ``rs:challenger`` requests in the batch's own commit: as many as alarms, at the alarmed event's time,
    the same in one batch or many, and a redelivery adds none."""
    codec = codec_for("RatingEvent")
    msgs, times = [], []
    for i in range(4000):
        user, movie = 1 + i % 40, int(MOVIES[(i * 7) % len(MOVIES)])
        ts = 1_400_000_000_000 + i * 60_000
        ev = rating_event(user, movie, 4.5 if i < 2000 else 0.5, ts, "replay")  # every rating flips at 2,000
        msgs.append(Message(TOPIC, 0, i, codec.encode(ev), key=user_key(user)))
        times.append(ts)
    whole, parts = _processor(MemoryFeatureTables()), _processor(MemoryFeatureTables())
    whole.run(msgs)
    for i in range(0, len(msgs), 300):
        parts.run(msgs[i : i + 300])
    parts.run(msgs[1000:2600])  # redelivered: below the fence, nothing counted again
    # the oracle: the same online model stepped alone over the same events
    alone = OnlineRatingModel(seed=1)
    alarms = [t for m, t in zip(msgs, times, strict=True) if alone.learn_one(*_triple(codec, m)).drift]
    assert alarms and all(t > times[2000] for t in alarms)  # the alarms follow the flip
    for proc in (whole, parts):
        got = proc.store.hashes[keys.CHALLENGER]
        assert int(got["requested"]) == len(alarms) == int(proc.store.hashes[keys.ONLINE]["drifts"])
        assert int(got["last_alarm_ms"]) == alarms[-1] and got["reason"].startswith("drift")


def _triple(codec, m: Message) -> tuple[int, int, float]:
    ev = codec.decode(m.value)
    return ev["user_id"], ev["movie_id"], ev["rating"]


class _RefusesOnce(MemoryFeatureTables):
    """A store whose first commit fails, as when the fence moved or Redis went away mid-commit."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0

    def commit(self, topic, fence, ops, checks=None) -> bool:  # type: ignore[no-untyped-def]
        if not self.refused:
            self.refused += 1
            return False
        return super().commit(topic, fence, ops, checks)


def test_a_batch_planned_again_after_a_failed_commit_feeds_the_online_model_once() -> None:
    """The re-plan reuses the online model's steps for the events it already learned: the model, its counters
    and rs:online equal a run whose commit never failed (the oracle: the model stepped once per event)."""
    codec = codec_for("RatingEvent")
    msgs = _messages(1200)
    clean, retried = _processor(MemoryFeatureTables()), _processor(_RefusesOnce())
    clean.run(msgs)
    retried.run(msgs)  # plan, refused, plan again, commit
    assert retried.store.refused == 1
    alone = OnlineRatingModel(seed=1)
    errors = [alone.learn_one(*_triple(codec, m)).abs_error for m in msgs]
    for proc in (clean, retried):
        assert proc.online.n == alone.n == len(msgs)
        assert proc.online.abs_sum == pytest.approx(alone.abs_sum, rel=1e-12)
        online = proc.store.hashes[keys.ONLINE]
        assert int(online["n"]) == len(msgs)
        assert float(online["abs_sum"]) == pytest.approx(sum(errors), rel=1e-9)
    probe = (5, int(MOVIES[3]))
    assert retried.online.predict_one(*probe) == clean.online.predict_one(*probe)


def _parts(msgs: list[Message], size: int) -> list[list[Message]]:
    return [msgs[i : i + size] for i in range(0, len(msgs), size)]


@pytest.mark.parametrize("read_at", ["before_commit", "after_commit"])
def test_a_part_planned_over_a_commit_in_flight_leaves_the_state_of_one_part_at_a_time(
    live_settings: Settings, read_at: str
) -> None:
    """The worker plans part k + 1 while part k commits; its read lands before that commit or after it. The
    oracle: the same parts planned and committed one at a time (each part re-rates movies, re-sends entries
    and touches the users the part before it wrote, so a read that missed part k would differ)."""
    client = redis.Redis.from_url(live_settings.redis_url)
    msgs = _messages(2400)
    resent = [*msgs[:2000], *msgs[1500:1700], *msgs[2000:]]  # a producer's retry inside the poll
    parts = _parts(resent, 300)
    serial = _processor(MemoryFeatureTables())
    for part in parts:
        serial.run(part)
    overlapped = _processor(RedisFeatureTables(client))
    prev = overlapped.plan(parts[0])
    for part in parts[1:]:
        if read_at == "after_commit":
            assert overlapped.commit(prev)
            plan = overlapped.plan(part, after=prev)
        else:
            plan = overlapped.plan(part, after=prev)
            assert overlapped.commit(prev)
        prev = plan
    assert overlapped.commit(prev)
    assert diff_states(serial.store.snapshot(), redis_snapshot(client)) == []
    assert int(client.hget(keys.STATS, "duplicates_skipped")) == 200
    assert overlapped.online.n == serial.online.n == len(msgs)


def test_a_refused_commit_under_a_part_planned_over_it_is_planned_again_and_learned_once() -> None:
    """Part 0's commit is refused after part 1 was planned over it: part 1 fails its fence too (it expects
    part 0's), both are planned again as one batch, and the online model still stepped once per event."""
    codec = codec_for("RatingEvent")
    msgs = _messages(1200)
    store = _RefusesOnce()
    proc = _processor(store)
    first, second = _parts(msgs, 600)
    p0 = proc.plan(first)
    p1 = proc.plan(second, after=p0)
    assert proc.commit(p0) is False and proc.commit(p1) is False
    assert proc.run(msgs).applied == len(msgs)
    clean = _processor(MemoryFeatureTables())
    clean.run(msgs)
    assert diff_states(clean.store.snapshot(), store.snapshot()) == []
    alone = OnlineRatingModel(seed=1)
    for m in msgs:
        alone.learn_one(*_triple(codec, m))
    assert proc.online.n == alone.n == len(msgs)
    assert proc.online.abs_sum == pytest.approx(alone.abs_sum, rel=1e-12)
    assert int(store.hashes[keys.ONLINE]["n"]) == len(msgs)


class _RedisRefusesOnce(RedisFeatureTables):
    """Redis whose first commit is refused (another worker moved the fence, as the worker sees it)."""

    refused = 0

    def commit(self, topic, fence, ops, checks=None) -> bool:  # type: ignore[no-untyped-def]
        if not self.refused:
            self.refused += 1
            return False
        return super().commit(topic, fence, ops, checks)


@pytest.mark.parametrize("refuse", [False, True])
async def test_a_poll_applied_in_overlapping_parts_equals_one_batch(live_settings: Settings, refuse: bool) -> None:
    """``apply_batch``'s path for a poll larger than a batch: parts planned over the commit in flight, merged
    into the one plan the consumer follows (fences from the first read to the last write, counts summed)."""
    from streams.apply import _apply_parts

    client = redis.Redis.from_url(live_settings.redis_url)
    msgs = _messages(2600)
    store = (_RedisRefusesOnce if refuse else RedisFeatureTables)(client)
    proc = _processor(store)
    plan, _ = await _apply_parts(proc, msgs, None, 500)
    oracle = _processor(MemoryFeatureTables())
    whole = oracle.run(msgs)
    assert diff_states(oracle.store.snapshot(), redis_snapshot(client)) == []
    assert (plan.applied, plan.skipped, sorted(plan.users)) == (len(msgs), 0, sorted(whole.users))
    assert plan.fence == whole.fence
    assert proc.online.n == len(msgs)
