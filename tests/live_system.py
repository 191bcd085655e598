"""Helpers for the tests that run the live system: a var folder with a store and a tiny model, a gateway process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import polars as pl
import psutil
import pytest

from models.runtime import ModelRuntime
from reelstream.settings import Settings
from reelstream.shell import local_services
from schemas import redis_keys as keys
from tests.stream_support import (
    StreamCase,
    WorkerProcess,
    apply_env,
    bootstrap_var,
    install_model,
    open_case,
    unique_stream_env,
    wait_for,
)

__all__ = ["EVALUATION", "GatewayProcess", "Live", "bootstrap_var", "built_var", "install_var", "live"]

#: A stand-in for ``var/reports/evaluation.json`` (the models engineer's ``reelstream evaluate`` writes the real one).
EVALUATION = {"protocol": "prequential", "models": [{"model": "popularity", "HR@20": 0.05}]}


def install_var(settings: Settings, built_var: Path, evaluation: dict | None = None) -> ModelRuntime:
    """Copy the built store and reports into ``settings.var_dir`` and install a tiny random model.

    The model's ``data_version`` is the store's, so ``reelstream up`` reuses it instead of training.
    """
    shutil.copytree(built_var / "store", settings.store_dir)
    shutil.copytree(built_var / "reports", settings.reports_dir)
    store_version = json.loads((next(settings.store_dir.glob("v*")) / "metadata.json").read_text())["version"]
    movies = pl.read_parquet(next(settings.store_dir.glob("v*/items.parquet")))["movie_id"].to_numpy()
    runtime = install_model(settings, movies)
    meta_path = settings.models_dir / "m0001" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["data_version"] = int(store_version)
    meta_path.write_text(json.dumps(meta))
    if evaluation is not None:
        (settings.reports_dir / "evaluation.json").write_text(json.dumps(evaluation))
    return runtime


@pytest.fixture(scope="module")
def built_var(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bootstrapped var folder (store and quality report), once per test module."""
    return bootstrap_var(tmp_path_factory.mktemp("live-var"))


@dataclass
class Live(StreamCase):
    """One test's live system: its own topics and group, a store and a tiny model, worker processes."""

    def worker(self, name: str, workers: int = 1) -> WorkerProcess:
        """Start a worker and wait for its heartbeat."""
        w = super().worker(name, workers)
        wait_for(lambda: self._beating(w), 60, f"worker {name}'s heartbeat")
        return w

    def _beating(self, w: WorkerProcess) -> bool:
        assert w.alive(), f"worker {w.name} died:\n{w.tail()}"
        return bool(self.redis.exists(keys.worker(w.name)))


@pytest.fixture
def live(
    live_settings: Settings, subprocess_env: dict[str, str], built_var: Path, monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path, request: pytest.FixtureRequest,
) -> Iterator[Live]:  # fmt: skip
    """Settings with unique topic names and fast monitors, a var folder ready to serve; workers on demand."""
    env = unique_stream_env(request.node.name[5:20].replace("_", "-"))
    env |= {"REELSTREAM_GATEWAY_LAG_INTERVAL_S": "0.3", "REELSTREAM_PROBE_INTERVAL_S": "0.3"}
    settings = apply_env(monkeypatch, env)
    runtime = install_var(settings, built_var, evaluation=EVALUATION)
    with open_case(Live, settings, {**subprocess_env, **env}, runtime, tmp_path) as case:
        yield case


class GatewayProcess:
    """A real ``reelstream gateway`` child process on a free port."""

    def __init__(self, env: dict[str, str], log_dir: Path, *extra: str) -> None:
        """``extra``: more ``reelstream gateway`` options (``--workers 2``)."""
        self.port = local_services.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "gateway.log"
        argv = [sys.executable, "-m", "reelstream.shell.cli", "gateway", "--port", str(self.port), *extra]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        def answers() -> bool:
            assert self.proc.poll() is None, f"gateway exited:\n{self.tail()}"
            try:
                return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout, "the gateway to answer /health")

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def worker_processes(self) -> list[psutil.Process]:
        """The gateway's serving processes under ``--workers N`` (uvicorn's supervisor also starts a resource
        tracker, left out)."""
        children = psutil.Process(self.proc.pid).children(recursive=True)
        return [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]
