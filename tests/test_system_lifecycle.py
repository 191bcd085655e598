"""``reelstream up --detach`` then ``reelstream down``: everything starts, a second ``up`` reuses it, nothing is left.

A temporary var folder and free ports (its own Tansu and redis-server, started by
``up``); the store and a tiny model are pre-built there, so ``up`` reuses them
instead of bootstrapping and training. The replay runs (slowly) so ``down`` has a
producer to stop too. ``--detach`` leaves a supervisor in the background, which
``down`` stops first. The admin token ``up`` generates is printed, private (0600)
and the same on the second ``up``.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from reelstream import infra, system
from reelstream.settings import Settings
from tests.live_system import install_var
from tests.stream_support import wait_for

EXPECTED = {"broker", "redis", "worker-0", "gateway", "replay", "supervisor"} | (
    {"archive"} if system.archive_available() else set()
)
TOKEN_LINE = re.compile(r"admin   token (\S+)  \(generated once, in (\S+), mode 0600")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelstream.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def _pids(run_dir: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in run_dir.glob("*.pid")}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _started_here(run_dir: Path) -> list[psutil.Process]:
    """Live processes whose working folder is ``run_dir`` (``up`` starts every process there)."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and Path(proc.cwd()) == run_dir:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_up_detach_then_down_leaves_no_process_behind(tmp_path: Path, built_var: Path) -> None:
    var = tmp_path / "var"
    gateway_port = infra.free_port()
    env = {
        **os.environ,
        "REELSTREAM_VAR_DIR": str(var),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{infra.free_port()}",
        "REDIS_URL": f"redis://127.0.0.1:{infra.free_port()}/0",
        "REELSTREAM_GATEWAY_PORT": str(gateway_port),
        "REELSTREAM_WORKER_WEB_PORT": str(infra.free_port()),
    }
    env.pop("REELSTREAM_ADMIN_TOKEN", None)
    settings = Settings(var_dir=var, kafka_bootstrap=env["KAFKA_BOOTSTRAP"], redis_url=env["REDIS_URL"])
    install_var(settings, built_var)
    run_dir = settings.run_dir
    try:
        first = _cli(env, "up", "--detach", "--rate", "50")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "store   reusing version 1" in first.stdout and "model   reusing" in first.stdout
        assert "seed    HISTORY and the archive applied to Redis (store v1, model random-0)" in first.stdout
        assert f"http://127.0.0.1:{gateway_port}/" in first.stdout
        token, token_path = TOKEN_LINE.search(first.stdout).groups()  # type: ignore[union-attr]
        assert Path(token_path) == settings.admin_token_path and token_path.startswith(str(var))
        assert settings.admin_token_path.read_text().strip() == token
        assert stat.S_IMODE(settings.admin_token_path.stat().st_mode) == 0o600
        pids = _pids(run_dir)
        assert set(pids) == EXPECTED, first.stdout
        assert all(_alive(pid) for pid in pids.values())

        base = f"http://127.0.0.1:{gateway_port}"
        health = httpx.get(f"{base}/health", timeout=5).json()
        assert health["redis"]["ok"] and health["broker"]["ok"] and health["model"]["ok"]
        assert httpx.get(f"{base}/", timeout=5).status_code == 200
        wait_for(lambda: httpx.get(f"{base}/stats", timeout=5).json()["events_applied"], 60, "replayed events applied")

        second = _cli(env, "up", "--detach", "--rate", "50")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "worker-0 already running" in second.stdout and "gateway already answering" in second.stdout
        assert "seed    reusing HISTORY in Redis" in second.stdout
        assert "replay  already running" in second.stdout and "already answering; not starting" in second.stdout
        assert f"Already supervised by pid {pids['supervisor']}" in second.stdout
        assert TOKEN_LINE.search(second.stdout).group(1) == token  # type: ignore[union-attr]
        assert _pids(run_dir) == pids
    finally:
        down = _cli(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for name in EXPECTED:
        assert f"{name}" in down.stdout
    assert not [pid for pid in pids.values() if _alive(pid)]
    assert not _started_here(run_dir)
    assert not list(run_dir.glob("*.pid"))
