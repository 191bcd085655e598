"""Shared fixtures: a real Tansu broker and a real Redis server on free loopback ports.

Each test session starts its own pair (so it never touches a running
``reelstream up``) and points the settings at them through the environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import redis

from models.runtime import ModelRuntime
from reelstream.settings import PROJECT_ROOT, Settings, get_settings
from reelstream.shell import local_services
from tests.live_system import built_var, live  # noqa: F401 - fixtures shared by the live-system tests
from tests.user_state import movielens_items


@dataclass(frozen=True)
class LiveInfra:
    """Addresses of the session's real broker and Redis server."""

    kafka_bootstrap: str
    redis_url: str
    run_dir: Path


@pytest.fixture(scope="session")
def live_infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveInfra]:
    """Start Tansu and redis-server once per test session; stop them at the end."""
    run_dir = tmp_path_factory.mktemp("infra")
    kafka_port, redis_port = local_services.free_port(), local_services.free_port()
    local_services.start_broker(run_dir, "127.0.0.1", kafka_port)
    try:
        local_services.start_redis(run_dir, "127.0.0.1", redis_port)
    except BaseException:
        local_services.stop_process(run_dir, "broker")
        raise
    try:
        yield LiveInfra(f"127.0.0.1:{kafka_port}", f"redis://127.0.0.1:{redis_port}/0", run_dir)
    finally:
        local_services.stop_process(run_dir, "broker")
        local_services.stop_process(run_dir, "redis")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings writing under a fresh temporary ``var`` folder (no infra started)."""
    monkeypatch.setenv("REELSTREAM_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def live_settings(live_infra: LiveInfra, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointing at the session's real broker and Redis, with a clean Redis database."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP", live_infra.kafka_bootstrap)
    monkeypatch.setenv("REDIS_URL", live_infra.redis_url)
    get_settings.cache_clear()
    s = get_settings()
    client = redis.Redis.from_url(s.redis_url)
    client.flushdb()
    client.close()
    yield s
    get_settings.cache_clear()


@pytest.fixture
def subprocess_env(live_settings: Settings) -> dict[str, str]:
    """The environment a child ``reelstream`` process needs to use the session's local_services."""
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP"] = live_settings.kafka_bootstrap
    env["REDIS_URL"] = live_settings.redis_url
    env["REELSTREAM_VAR_DIR"] = str(live_settings.var_dir)
    return env


@pytest.fixture
def rclient(live_settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(live_settings.redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def items() -> pl.DataFrame:
    """The bundled catalogue (the gateway tests' default; a module defining its own ``items`` overrides it)."""
    return movielens_items(PROJECT_ROOT / "data" / "ml-latest-small")


@pytest.fixture(scope="module")
def runtime(items: pl.DataFrame) -> ModelRuntime:
    """A small random model over ``items`` (overridden, like ``items``, by a module's own)."""
    return ModelRuntime.random(items["movie_id"].to_numpy(), hidden=32, latent=16, seed=3)
