"""The hot swap (streams/swap.py) against a real Redis: every state re-encoded, nothing lost or applied twice.

The oracle is a clean run: the worker's processor applying the same events from scratch with the new
model (a dict store). A swap must leave every user's state as that run leaves it, whatever worker
updates land during it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import redis
from typer.testing import CliRunner

from gateway.app import build_gateway
from models.registry import ModelSet
from reelstream.errors import ModelError
from reelstream.settings import Settings
from reelstream.shell.cli import app
from schemas import redis_keys as keys
from streams.store import RedisFeatureTables, redis_snapshot
from streams.swap import DONE, RUNNING, model_pointer, run_swap, start_swap
from tests.swap_support import clean_run, processor, rating_messages, save_model, state_differences

MOVIES = np.arange(1, 41, dtype=np.int64) * 10


@pytest.fixture
def client(live_settings: Settings) -> redis.Redis:
    c = redis.Redis.from_url(live_settings.redis_url)
    yield c
    c.close()


def two_models(settings: Settings) -> tuple:
    old = save_model(settings.models_dir, "m0001", MOVIES, seed=0)
    new = save_model(settings.models_dir, "m0002", MOVIES, seed=1)
    (settings.models_dir / "CURRENT").write_text("m0001")
    return old, new


def worker(settings: Settings, client: redis.Redis, old) -> object:
    """The worker's processor over Redis, loading the models states name from var/models."""
    return processor(old, RedisFeatureTables(client), models=ModelSet(settings.models_dir, old))


def test_a_swap_under_concurrent_updates_equals_a_clean_run_on_the_new_model(
    live_settings: Settings, client: redis.Redis
) -> None:
    old, new = two_models(live_settings)
    msgs = rating_messages(30, 8, MOVIES)
    w = worker(live_settings, client, old)
    half = len(msgs) // 2
    w.run(msgs[:half])
    before = {int(k.decode().split(":")[2]) for k in client.scan_iter(match="rs:user:*") if k.count(b":") == 2}
    assert {client.hget(keys.user(u), "model_version") for u in before} == {b"m0001"}

    assert start_swap(live_settings.models_dir, client, "m0002") == "m0001"
    assert (live_settings.models_dir / "CURRENT").read_text().strip() == "m0002"
    pending = iter(msgs[half:])
    touched: list[int] = []

    def worker_update(uids: list[int]) -> None:
        """Between the swap's read and its write: the worker applies an event of a user in the batch."""
        for m in pending:
            if int(m.key.decode()) in uids:  # type: ignore[union-attr]
                w.run([m])
                touched.append(int(m.key.decode()))  # type: ignore[union-attr]
                return
            w.run([m])  # another user's event (on either model)

    summary = run_swap(live_settings.models_dir, client, batch=4, on_batch=worker_update)
    w.run(list(pending))

    assert summary is not None and summary.retries >= 1 and touched, "no write met a concurrent update"
    assert summary.users >= len(before)
    assert model_pointer(client)["swap"] == DONE and model_pointer(client)["serving"] == "m0002"
    got = redis_snapshot(client)
    problems = state_differences(clean_run(ModelSet(live_settings.models_dir).load("m0002"), msgs), got)
    assert not problems, f"{len(problems)} differences, first: {problems[:5]}"
    # the comparison sees a model difference: the clean run on the old model is another state
    assert len(state_differences(clean_run(old, msgs), got)) >= len(before)
    assert new.version == "m0002"


def test_a_worker_batch_planned_before_the_re_encode_is_refused_then_folded_on_the_new_model(
    live_settings: Settings, client: redis.Redis
) -> None:
    old, _new = two_models(live_settings)
    msgs = rating_messages(5, 6, MOVIES, seed=3)
    w = worker(live_settings, client, old)
    w.run(msgs[:-1])
    gw = build_gateway(live_settings)  # a gateway running before the swap follows it
    assert gw.catalog.model_version == "m0001" and not gw.refresh_models()
    start_swap(live_settings.models_dir, client, "m0002")
    assert gw.refresh_models() and gw.catalog.model_version == "m0002" and set(gw.others) == {"m0001"}
    assert not gw.refresh_models()  # nothing more to load
    plan = w.plan(msgs[-1:])  # folds the last event with the old model: the user is not re-encoded yet
    assert plan.applied == 1
    run_swap(live_settings.models_dir, client, batch=2)
    assert w.commit(plan) is False  # the swap moved that user since the plan read it
    w.run(msgs[-1:])
    assert gw.refresh_models() and gw.others == {}
    problems = state_differences(clean_run(ModelSet(live_settings.models_dir).load("m0002"), msgs),
                                 redis_snapshot(client))  # fmt: skip
    assert not problems, problems[:5]


def test_a_swapper_killed_midway_resumes_and_a_worker_restarted_mid_swap_follows_it(
    live_settings: Settings, client: redis.Redis
) -> None:
    old, _new = two_models(live_settings)
    msgs = rating_messages(12, 5, MOVIES, seed=5)
    worker(live_settings, client, old).run(msgs[:40])
    start_swap(live_settings.models_dir, client, "m0002")
    batches = {"n": 0}

    def die_after_two(uids: list[int]) -> None:
        batches["n"] += 1
        if batches["n"] > 2:
            raise redis.ConnectionError("swapper killed")

    with pytest.raises(redis.ConnectionError):
        run_swap(live_settings.models_dir, client, batch=3, on_batch=die_after_two)
    assert model_pointer(client)["swap"] == RUNNING
    (live_settings.models_dir / "CURRENT").write_text("m0001")  # as if the starter died before moving it
    models = {client.hget(k, "model_version") for k in client.scan_iter(match="rs:user:*") if k.count(b":") == 2}
    assert models == {b"m0001", b"m0002"}  # half-way: both models hold users
    # the gateway scores each user with the model the user's state belongs to
    gw = build_gateway(live_settings)
    assert gw.catalog.model_version == "m0002" and set(gw.others) == {"m0001"}
    on = {client.hget(keys.user(u), "model_version").decode(): u for u in range(1, 13)}
    assert set(on) == {"m0001", "m0002"}
    for model, uid in on.items():
        assert asyncio.run(gw.recommend(uid, 5)).model_version == model
    # a worker started now (CURRENT is already m0002) folds each user with the model its state names
    restarted = worker(live_settings, client, ModelSet(live_settings.models_dir).load("m0002"))
    restarted.run(msgs[40:])
    summary = run_swap(live_settings.models_dir, client, batch=3)
    assert summary is not None and model_pointer(client)["swap"] == DONE
    assert (live_settings.models_dir / "CURRENT").read_text().strip() == "m0002"  # the resumed swap moved it
    problems = state_differences(clean_run(ModelSet(live_settings.models_dir).load("m0002"), msgs),
                                 redis_snapshot(client))  # fmt: skip
    assert not problems, problems[:5]
    assert run_swap(live_settings.models_dir, client) is None  # nothing left to do
    assert gw.refresh_models() and gw.others == {}  # swap done: the old model is dropped
    assert {asyncio.run(gw.recommend(uid, 5)).model_version for uid in on.values()} == {"m0002"}


def test_a_swap_the_state_layout_cannot_take_is_refused_with_the_reason(
    live_settings: Settings, client: redis.Redis
) -> None:
    two_models(live_settings)
    save_model(live_settings.models_dir, "m0003", MOVIES, seed=2, prior={"beta": 1.0, "half_life_s": 86400.0})
    save_model(live_settings.models_dir, "m0004", MOVIES[:-1], seed=2)
    with pytest.raises(ModelError, match="half-life"):
        start_swap(live_settings.models_dir, client, "m0003")
    with pytest.raises(ModelError, match="m0004 lacks 1 movie"):
        start_swap(live_settings.models_dir, client, "m0004")
    save_model(live_settings.models_dir, "m0005", np.append(MOVIES, 999), seed=2)
    with pytest.raises(ModelError, match=r"m0001 lacks 1 movie.*999"):
        start_swap(live_settings.models_dir, client, "m0005")
    with pytest.raises(ModelError, match="no model 'm0009'"):
        start_swap(live_settings.models_dir, client, "m0009")
    assert model_pointer(client) == {}  # nothing started
    result = CliRunner().invoke(app, ["swap"])
    assert result.exit_code != 0 and "no swap is running" in str(result.exception)
    start_swap(live_settings.models_dir, client, "m0002")
    with pytest.raises(ModelError, match="still running"):
        start_swap(live_settings.models_dir, client, "m0003")


def test_the_seed_marker_follows_the_swap_so_no_rebuild_is_asked_for(
    live_settings: Settings, client: redis.Redis, tmp_path: Path
) -> None:
    from streams.seed import read_marker, seed_state

    old, _ = two_models(live_settings)
    worker(live_settings, client, old).run(rating_messages(3, 3, MOVIES))
    client.hset(keys.SEED, mapping={"status": "done", "store_version": 1, "model_version": "m0001"})
    (live_settings.models_dir / "CURRENT").write_text("m0002")  # `reelstream train` moved it: Redis is on m0001
    assert seed_state(read_marker(client), 1, "m0002") == "stale"  # a worker restart now would rebuild
    start_swap(live_settings.models_dir, client, "m0002")
    assert model_pointer(client)["swap_from"] == "m0001"
    assert seed_state(read_marker(client), 1, "m0001") == "done"
    assert seed_state(read_marker(client), 1, "m0002") == "done"  # mid-swap: either model's states are current
    result = CliRunner().invoke(app, ["swap"])  # resumes the running swap
    assert result.exit_code == 0 and "swap done: m0001 -> m0002: 3 users re-encoded" in result.output, result.output
    marker = read_marker(client)
    assert marker is not None and marker["model_version"] == "m0002" and "swap_to" not in marker
    assert seed_state(marker, 1, "m0001") == "stale"
