"""``reelstream infra up|down|status`` against the real Tansu and redis-server binaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from reelstream.errors import InfraError
from reelstream.settings import Settings
from reelstream.shell import local_services


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reelstream.shell.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["KAFKA_BOOTSTRAP"] = f"127.0.0.1:{local_services.free_port()}"
    env["REDIS_URL"] = f"redis://127.0.0.1:{local_services.free_port()}/0"
    env["REELSTREAM_VAR_DIR"] = str(tmp_path / "var")
    return env


def test_up_status_down_lifecycle(cli_env: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "var" / "run"
    status = _cli(cli_env, "infra", "status")
    assert status.returncode == 1
    assert "down" in status.stdout

    up = _cli(cli_env, "infra", "up")
    assert up.returncode == 0, up.stderr
    assert "started (Tansu" in up.stdout and "redis" in up.stdout
    assert local_services.broker_answers(cli_env["KAFKA_BOOTSTRAP"])
    assert local_services.redis_answers(cli_env["REDIS_URL"])
    pids = [int((run_dir / f"{n}.pid").read_text()) for n in ("broker", "redis")]
    assert (run_dir / "broker.log").exists() and (run_dir / "redis.log").exists()
    try:
        again = _cli(cli_env, "infra", "up")
        assert again.returncode == 0
        assert again.stdout.count("already answering") == 2

        status = _cli(cli_env, "infra", "status")
        assert status.returncode == 0
        assert all(f"pid {p}" in status.stdout for p in pids)
    finally:
        down = _cli(cli_env, "infra", "down")
    assert down.returncode == 0
    assert down.stdout.count("stopped") == 2
    assert not local_services.broker_answers(cli_env["KAFKA_BOOTSTRAP"])
    assert not local_services.redis_answers(cli_env["REDIS_URL"])
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not (run_dir / "broker.pid").exists()


def test_up_uses_services_that_already_answer(live_infra, tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=live_infra.kafka_bootstrap, redis_url=live_infra.redis_url, var_dir=tmp_path / "var"
    )
    lines = local_services.up(settings)
    assert all("already answering" in line for line in lines)
    assert not (settings.run_dir / "broker.pid").exists()
    assert "was not started by reelstream" in local_services.down(settings)[0]
    assert local_services.broker_answers(live_infra.kafka_bootstrap)


def test_up_refuses_to_start_for_a_remote_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No packet may leave loopback in tests: the remote broker is simply "not answering".
    monkeypatch.setattr(local_services, "broker_answers", lambda bootstrap, timeout=1.0: False)
    settings = Settings(kafka_bootstrap="kafka.example.internal:9092", var_dir=tmp_path / "var")
    with pytest.raises(InfraError, match="not local"):
        local_services.up(settings)


@pytest.mark.parametrize("bad", ["nohostport", "host:notaport"])
def test_bad_bootstrap_is_a_clear_error(bad: str) -> None:
    with pytest.raises(InfraError, match="KAFKA_BOOTSTRAP"):
        local_services.kafka_address(bad)


def test_probes_say_no_when_nothing_listens() -> None:
    port = local_services.free_port()
    assert not local_services.broker_answers(f"127.0.0.1:{port}", timeout=0.2)
    assert not local_services.redis_answers(f"redis://127.0.0.1:{port}/0", timeout=0.2)


def test_redis_keeps_its_state_across_a_restart(tmp_path: Path) -> None:
    """The local Redis runs with an append-only file, so a stop and start (``down`` + ``up``) keeps every key."""
    run_dir, port = tmp_path / "run", local_services.free_port()
    url = f"redis://127.0.0.1:{port}/0"
    state = {b"version": b"3", b"pre": bytes(range(256)), b"model_version": b"m0001"}
    local_services.start_redis(run_dir, "127.0.0.1", port)
    try:
        client = redis.Redis.from_url(url)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.hset("rs:user:1", mapping=state)
        client.rpush("rs:user:1:recent", "10:4.0:1", "11:3.5:2")
        client.close()
    finally:
        assert local_services.stop_process(run_dir, "redis")
    assert not local_services.redis_answers(url)
    assert (run_dir / "redis" / "appendonly.aof").stat().st_size > 0

    local_services.start_redis(run_dir, "127.0.0.1", port)
    try:
        client = redis.Redis.from_url(url)
        assert client.hgetall("rs:user:1") == state
        assert client.lrange("rs:user:1:recent", 0, -1) == [b"10:4.0:1", b"11:3.5:2"]
        client.close()
    finally:
        local_services.stop_process(run_dir, "redis")
