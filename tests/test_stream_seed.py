"""``reelstream seed``: HISTORY folded into a real Redis, exactly once: per event (the worker's path) where a
test says ``per_event=True``, else by the default bulk path (tests/test_stream_bulk_seed.py compares the two).

Each test gets its own topics and consumer group on the session's broker and a
clean Redis database; the model is a tiny random one (the seed's cost is the
processor's, not the model's). The expected contents are the pure-Python
reference (``reference_state``: the same processor over a dict store).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bootstrap.store import load_store
from models.data import Events
from models.hybrid_vae import HybridVAE
from models.runtime import ModelRuntime
from reelstream.errors import DataError
from reelstream.settings import Settings
from schemas import redis_keys as keys
from streams.admin import ensure_topics_sync
from streams.seed import SeedSummary, read_marker, seed_history
from streams.store import RedisFeatureTables, redis_snapshot
from tests.stream_support import (
    bootstrap_var,
    diff_states,
    install_model,
    reference_state,
    stats,
    store_and_model,
)

#: Rows of HISTORY the slice tests seed, and their batch size (several batches, a partial last one).
SLICE, BATCH = 6_000, 700


@pytest.fixture(scope="module")
def built_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bootstrap_var(tmp_path_factory.mktemp("seed-var")) / "store"


class Case:
    def __init__(self, settings: Settings, env: dict[str, str], runtime: ModelRuntime) -> None:
        self.settings, self.env, self.runtime = settings, env, runtime
        self.redis = redis.Redis.from_url(settings.redis_url)

    def rows(self, limit: int | None = None) -> list[tuple[int, int, float, int]]:
        frame = load_store(self.settings.store_dir).history.select("user_id", "movie_id", "rating", "ts")
        return list((frame if limit is None else frame.head(limit)).iter_rows())

    def seed(self, **kwargs: object) -> SeedSummary:
        return seed_history(self.settings, client=self.redis, **kwargs)  # type: ignore[arg-type]

    def snapshot(self) -> dict:
        """Every rs:* key but the marker (it records the run, the reference has none)."""
        return {k: v for k, v in redis_snapshot(self.redis).items() if k != keys.SEED}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "seed", *args], env=self.env,
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


@pytest.fixture
def case(
    live_settings: Settings, subprocess_env: dict[str, str], built_store: Path, monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Case]:  # fmt: skip
    settings, names, runtime = store_and_model(monkeypatch, built_store, request.node.name[5:25].replace("_", "-"))
    c = Case(settings, {**subprocess_env, **names}, runtime)
    ensure_topics_sync(settings)
    try:
        yield c
    finally:
        c.redis.close()


def _assert_reference(case: Case, rows: list[tuple[int, int, float, int]], runtime: ModelRuntime | None = None) -> None:
    expected = reference_state(case.settings, runtime or case.runtime, rows)
    problems = diff_states(expected, case.snapshot())
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
    assert stats(case.redis)["events_applied"] == len(rows)  # nothing counted twice
    assert case.redis.hgetall(keys.offsets(case.settings.seed_topic)) == {b"0": str(len(rows) - 1).encode()}


def test_full_history_equals_the_reference_and_a_second_run_changes_nothing(case: Case) -> None:
    rows = case.rows()
    first = case.seed(per_event=True)
    assert (first.applied, first.skipped, first.dead, first.rows) == (len(rows), 0, 0, len(rows))
    assert first.batches == -(-len(rows) // case.settings.seed_batch)
    assert first.users == len({u for u, *_ in rows})
    _assert_reference(case, rows)
    marker = read_marker(case.redis)
    assert marker is not None
    assert marker["status"] == "done" and marker["rows"] == str(len(rows)) and marker["store_version"] == "1"
    assert marker["model_version"] == case.runtime.version and marker["topic"] == case.settings.seed_topic

    # A user with history is served from a personalised state, not as a cold user.
    uid = rows[-1][0]
    user = case.redis.hgetall(keys.user(uid))
    n_user = sum(1 for u, *_ in rows if u == uid)
    assert int(user[b"version"]) == n_user and int(user[b"n_events"]) > 0 and int(user[b"n"]) == n_user
    assert user[b"model_version"].decode() == case.runtime.version
    assert int(case.redis.zscore(keys.ITEMS_POPULAR, rows[-1][1]) or 0) >= 1

    before = redis_snapshot(case.redis)
    second = case.seed(per_event=True)
    assert (second.applied, second.skipped, second.batches) == (0, len(rows), 0)
    after = redis_snapshot(case.redis)
    marker_before, marker_after = before.pop(keys.SEED), after.pop(keys.SEED)
    assert after == before
    assert {k: v for k, v in marker_after.items() if k != "finished_ms"} == {
        k: v for k, v in marker_before.items() if k != "finished_ms"
    }


def test_a_run_interrupted_midway_then_rerun_applies_every_row_once(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = case.rows(SLICE)
    real_commit = RedisFeatureTables.commit
    calls = {"n": 0}

    def crash_after_three(self: RedisFeatureTables, topic: str, fence: dict, ops: list, checks: Any = None) -> bool:
        calls["n"] += 1
        if calls["n"] > 3:
            raise redis.ConnectionError("killed midway")
        return real_commit(self, topic, fence, ops, checks)

    monkeypatch.setattr(RedisFeatureTables, "commit", crash_after_three)
    with pytest.raises(redis.ConnectionError):
        case.seed(limit=SLICE, batch_size=BATCH, per_event=True)
    assert read_marker(case.redis)["status"] == "running"  # type: ignore[index]
    assert stats(case.redis)["events_applied"] == 3 * BATCH
    monkeypatch.setattr(RedisFeatureTables, "commit", real_commit)

    # The rerun re-reads with other batch boundaries: the fence, not the batching, decides.
    again = case.seed(limit=SLICE, batch_size=BATCH * 2 + 1, per_event=True)
    assert (again.applied, again.skipped) == (SLICE - 3 * BATCH, 3 * BATCH)
    assert read_marker(case.redis)["status"] == "done"  # type: ignore[index]
    _assert_reference(case, rows)


def test_a_stale_marker_is_refused_and_reset_reseeds(case: Case) -> None:
    rows = case.rows(SLICE)
    case.seed(limit=SLICE, batch_size=BATCH)
    case.redis.set("other-app:key", "kept")
    movies = pl.read_parquet(next(case.settings.store_dir.glob("v*/items.parquet")))["movie_id"].to_numpy()
    other = install_model(case.settings, movies, seed=1)  # another model: the states depend on its weights
    assert other.version != case.runtime.version

    refused = case.cli("--limit", str(SLICE))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert f"model {case.runtime.version}" in message and f"model {other.version}" in message
    assert "weights" in message and "reelstream seed --reset" in message and "rs:*" in message
    assert "Traceback" not in refused.stderr
    with pytest.raises(DataError, match="--reset"):
        case.seed(limit=SLICE)

    done = case.cli("--reset", "--limit", str(SLICE), "--batch", str(BATCH))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "keys deleted" in done.stdout and f"seeded {SLICE:,} ratings" in done.stdout
    assert case.redis.get("other-app:key") == b"kept"
    _assert_reference(case, rows, runtime=other)
    assert read_marker(case.redis)["model_version"] == other.version  # type: ignore[index]


def test_reset_rewinds_the_worker_group_to_the_start(case: Case) -> None:
    s = case.settings
    tps = [TopicPartition(s.topic_ratings, p) for p in range(s.topic_partitions)]

    async def commit_group(offset: int) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap, group_id=s.app_id, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.commit({tp: offset for tp in tps})
        finally:
            await consumer.stop()

    async def committed() -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
        await admin.start()
        try:
            got = await admin.list_consumer_group_offsets(s.app_id, partitions=tps)
            return {tp.partition: meta.offset for tp, meta in got.items()}
        finally:
            await admin.close()

    asyncio.run(commit_group(7))  # as if a worker had consumed a stream this Redis does not hold
    assert set((asyncio.run(committed())).values()) == {7}
    summary = case.seed(limit=500, reset=True)
    assert summary.rewound == s.topic_partitions
    assert set((asyncio.run(committed())).values()) == {0}


def test_worker_state_without_a_marker_is_refused(case: Case) -> None:
    case.redis.hset(keys.offsets(case.settings.topic_ratings), "0", 41)  # the worker applied stream events
    with pytest.raises(DataError, match="without HISTORY"):
        case.seed(limit=100)
    assert read_marker(case.redis) is None
    case.redis.set(keys.worker("w1"), 1)
    with pytest.raises(DataError, match="w1"):
        case.seed(limit=100, reset=True)
    case.redis.delete(keys.worker("w1"))
    assert case.seed(limit=100, reset=True).applied == 100


def test_seeded_prior_zset_is_the_models_own_prior_at_the_end_of_history(case: Case) -> None:
    """``rs:items:prior`` after the seed, through ``prior_logits``, equals the model's HISTORY-primed prior."""
    rows = case.rows()
    case.seed()
    rt = case.runtime
    half_life = rt.item_prior["half_life_s"]
    assert half_life != case.settings.trending_half_life_s  # the prior has its own zset, not trending's
    # the model's own prior: HybridVAE.prime over HISTORY, clock at the last HISTORY timestamp
    model = HybridVAE(prior_beta=rt.item_prior["beta"], prior_half_life_days=half_life / 86400.0)
    model.runtime_ = rt
    idx = np.array([rt.item_index(m) for _, m, _, _ in rows], dtype=np.int32)
    ts = np.array([t for *_, t in rows], dtype=np.int64)
    model.prime(Events(np.zeros_like(idx), idx, np.zeros(len(rows), np.float32), ts))
    expected = rt.prior_logits(model.trending_, model.now_)

    clock = {k.decode(): v.decode() for k, v in case.redis.hgetall(keys.ITEMS_PRIOR_CLOCK).items()}
    assert int(clock["event_ms"]) == int(model.now_) * 1000 == int(ts.max()) * 1000
    assert int(clock["events"]) == len(rows)
    zset = np.full(rt.n_items, -np.inf)
    for member, score in case.redis.zrange(keys.ITEMS_PRIOR, 0, -1, withscores=True):
        zset[rt.item_index(int(member))] = score
    got = rt.prior_logits(zset, int(clock["event_ms"]) / 1000.0, half_life_s=float(clock["half_life_s"]))
    assert np.isfinite(zset).sum() == len(set(idx.tolist()))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected, 0.0)  # a real prior, not an empty one
