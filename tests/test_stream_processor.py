"""The batch processor against both stores: the Lua script and the dict store agree, redelivery is a no-op,
and the offset fence refuses a stale writer."""

from __future__ import annotations

import numpy as np
import redis

from models.runtime import ModelRuntime
from reelstream.settings import Settings
from schemas import redis_keys as keys
from streams.codecs import codec_for
from streams.events import rating_event
from streams.online import OnlineRatingModel
from streams.processor import Message, RatingProcessor
from streams.store import MemoryFeatureStore, RedisFeatureStore, redis_snapshot
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
        out.append(Message(TOPIC, p, offsets[p], codec.encode(ev)))
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
    in_redis, in_memory = _processor(RedisFeatureStore(client)), _processor(MemoryFeatureStore())
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
    a, b = _processor(RedisFeatureStore(client)), _processor(RedisFeatureStore(client))
    stale = a.plan(msgs[:50])  # worker A read the state, then lost the partition ...
    assert b.run(msgs[:80]).applied == 80  # ... to worker B, which applied more
    assert a.commit(stale) is False  # A's late commit is refused: nothing is applied twice
    assert int(client.hget("rs:stats", "events_applied")) == 80
    assert a.run(msgs).applied == len(msgs) - 80  # re-planned: only what B had not applied
