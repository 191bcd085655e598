"""The whole live system in one command: infrastructure, data, model, worker(s), gateway and replay.

``up`` is idempotent: it starts only what is not running and builds only what is
missing (the feature store, a model trained on the current store version, the
HISTORY seed of Redis for that store and model: ``reelstream seed``), so a
second ``up`` reuses everything. ``down`` stops, in reverse order, every process
that ``up`` started (never an external broker or Redis). Each long-running
process is a ``reelstream`` sub-command with its own pid and log file in
``var/run/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from reelstream import infra
from reelstream.errors import ReelstreamError
from reelstream.settings import Settings
from schemas import redis_keys

__all__ = ["SystemPlan", "down", "managed_processes", "prepare", "up"]

READY_TIMEOUT_S = 120.0
#: Order matters: ``down`` stops these first (producers before consumers before servers).
APP_PROCESSES = ("replay", "gateway", "worker")


@dataclass(frozen=True)
class SystemPlan:
    """What ``reelstream up`` should run."""

    workers: int = 1
    replay: bool = True
    replay_rate: float = 200.0  #: events per second: slow enough to watch lists change
    extra_env: dict[str, str] = field(default_factory=dict)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reelstream.cli", *args]


def _run_step(argv: list[str], what: str, echo: Callable[[str], None]) -> None:
    """Run a one-shot sub-command in the foreground (its progress shows); fail loudly."""
    echo(f"[bold]{what}[/] ...")
    result = subprocess.run(argv, check=False)
    if result.returncode != 0:
        raise ReelstreamError(f"{what} failed (exit {result.returncode}); see its message above")


def _store_version(settings: Settings) -> int | None:
    pointer = settings.store_dir / "CURRENT"
    if not pointer.exists():
        return None
    meta = settings.store_dir / pointer.read_text().strip() / "metadata.json"
    try:
        return int(json.loads(meta.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _model_data_version(settings: Settings) -> int | None:
    pointer = settings.models_dir / "CURRENT"
    if not pointer.exists():
        return None
    meta = settings.models_dir / pointer.read_text().strip() / "metadata.json"
    try:
        value = json.loads(meta.read_text()).get("data_version")
    except (OSError, ValueError):
        return None
    return int(value) if value is not None else None


def _model_version(settings: Settings) -> str | None:
    pointer = settings.models_dir / "CURRENT"
    try:
        meta = settings.models_dir / pointer.read_text().strip() / "metadata.json"
        return str(json.loads(meta.read_text()).get("model_version", "unversioned"))
    except (OSError, ValueError):
        return None


def _seed_marker(settings: Settings) -> dict[str, str] | None:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5.0)
    try:
        raw = client.hgetall(redis_keys.SEED)
    finally:
        client.close()
    return {k.decode(): v.decode() for k, v in raw.items()} if raw else None


def _seed(settings: Settings, store_version: int | None, trained: bool, echo: Callable[[str], None]) -> str:
    """Seed HISTORY into Redis unless ``rs:seed`` already holds this store and model version, complete.

    A model trained by this ``up`` invalidates every state in Redis (they depend on its weights), so
    then the seed runs with ``--reset`` (which also rewinds the worker group to the topics' start);
    a marker left by another model otherwise makes ``reelstream seed`` refuse with what to do.
    """
    marker = _seed_marker(settings)
    model_version = _model_version(settings)
    if (
        marker is not None and marker.get("status") == "done"
        and marker.get("store_version") == str(store_version) and marker.get("model_version") == model_version
    ):  # fmt: skip
        return f"seed    reusing HISTORY in Redis (store v{store_version}, model {model_version})"
    stale = marker is not None and (
        marker.get("store_version") != str(store_version) or marker.get("model_version") != model_version
    )
    argv = _cli("seed", "--reset") if trained and stale else _cli("seed")
    _run_step(argv, "seeding Redis with HISTORY", echo)
    return f"seed    HISTORY applied to Redis (store v{store_version}, model {model_version})"


def _worker_names(settings: Settings) -> list[str]:
    return sorted(p.stem for p in settings.run_dir.glob("worker-*.pid"))


def managed_processes(settings: Settings) -> dict[str, int]:
    """Name -> pid of every application process ``up`` started that is still alive."""
    names = ["replay", "gateway", *_worker_names(settings)]
    alive = {}
    for name in names:
        pid = infra.running_pid(settings.run_dir, name)
        if pid is not None:
            alive[name] = pid
    return alive


def gateway_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.gateway_host in {"0.0.0.0", "::"} else settings.gateway_host
    return f"http://{host}:{settings.gateway_port}"


def _gateway_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code in {200, 503}
    except httpx.HTTPError:
        return False


def _worker_heartbeat(settings: Settings) -> bool:
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0)
    try:
        return any(True for _ in client.scan_iter(match=redis_keys.worker("*"), count=100))
    except redis.RedisError:
        return False
    finally:
        client.close()


def prepare(settings: Settings, echo: Callable[[str], None]) -> list[str]:
    """Topics, feature store, model and seeded HISTORY, each built only when missing or stale.

    Idempotent, and needs only a reachable broker and Redis: ``up`` runs it after the local
    infrastructure; the docker-compose ``init`` service runs it (``reelstream prepare``) against
    Apache Kafka and Redis 7.
    """
    lines = []
    _run_step(_cli("topics", "create"), "creating topics", echo)

    store_version = _store_version(settings)
    if store_version is None:
        _run_step(_cli("bootstrap"), "bootstrapping the bundled dataset", echo)
        store_version = _store_version(settings)
        lines.append(f"store   built version {store_version}")
    else:
        lines.append(f"store   reusing version {store_version}")
    trained = _model_data_version(settings) != store_version
    if trained:
        _run_step(_cli("train"), "training the hybrid VAE", echo)
        lines.append("model   trained")
    else:
        lines.append("model   reusing the current model")
    lines.append(_seed(settings, store_version, trained, echo))
    return lines


def up(settings: Settings, plan: SystemPlan, echo: Callable[[str], None]) -> list[str]:
    """Bring the system up; returns one summary line per component."""
    lines = infra.up(settings)
    lines += prepare(settings, echo)

    run_dir = settings.run_dir
    for i in range(plan.workers):
        name = f"worker-{i}"
        if infra.running_pid(run_dir, name) is None:
            port = settings.worker_web_port + i
            infra.spawn(run_dir, name, _cli("worker", "--web-port", str(port)), env=plan.extra_env)
            lines.append(f"{name} started (web port {port})")
        else:
            lines.append(f"{name} already running")
    infra.wait_until(lambda: _worker_heartbeat(settings), READY_TIMEOUT_S, "worker heartbeat in Redis", 0.2)

    url = gateway_url(settings)
    if infra.running_pid(run_dir, "gateway") is None and not _gateway_answers(url):
        infra.spawn(run_dir, "gateway", _cli("gateway"), env=plan.extra_env)
        lines.append(f"gateway started at {url}")
    else:
        lines.append(f"gateway already answering at {url}")
    infra.wait_until(lambda: _gateway_answers(url), READY_TIMEOUT_S, f"gateway at {url}", 0.2)

    if plan.replay:
        if infra.running_pid(run_dir, "replay") is None:
            argv = _cli("replay", "--rate", f"{plan.replay_rate:g}", "--resume")
            infra.spawn(run_dir, "replay", argv, env=plan.extra_env)
            lines.append(f"replay  started at {plan.replay_rate:g} events/s (resumes from its checkpoint)")
        else:
            lines.append("replay  already running")
    return lines


def down(settings: Settings) -> list[str]:
    """Stop every process ``up`` started, then the local broker and Redis."""
    lines = []
    for name in ("replay", "gateway", *_worker_names(settings)):
        if infra.stop_process(settings.run_dir, name):
            lines.append(f"{name:<8} stopped")
    lines.extend(infra.down(settings))
    return lines


def supervise(settings: Settings, poll_s: float = 1.0) -> str:
    """Block while the application processes run; returns why it stopped (a process died)."""
    expected = set(managed_processes(settings))
    while True:
        alive = set(managed_processes(settings))
        missing = expected - alive - {"replay"}  # the replay ends by itself when the stream is done
        if missing:
            return f"{', '.join(sorted(missing))} exited; see {settings.run_dir}/<name>.log"
        time.sleep(poll_s)  # supervision period, not synchronisation


def log_path(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.log"
