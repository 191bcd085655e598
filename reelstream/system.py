"""The whole live system in one command: infrastructure, data, model, worker(s), archive, gateway, replay.

``up`` is idempotent: it starts only what is not running and builds only what is
missing (the feature store, a model trained on the current store version, the
HISTORY seed of Redis for that store and model: ``reelstream seed``), so a
second ``up`` reuses everything. Every process it starts or finds running is
handed to a :class:`~reelstream.supervisor.Supervisor`, which restarts what
crashes (from the first spawn on, so a child dying during start-up is restarted
too) and raises :class:`~reelstream.supervisor.CrashLoop` when one keeps dying.
``down`` first makes the supervisor let go, then stops, in reverse order, every
process that ``up`` started (never an external broker or Redis). Each
long-running process is a ``reelstream`` sub-command with its own pid and log
file in ``var/run/``; children get the settings of ``up`` itself, ``.env``
included (they run in ``var/run/``, where no ``.env`` is).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from dotenv import dotenv_values

from reelstream import infra
from reelstream.errors import InfraError, ReelstreamError
from reelstream.redis_client import redis_client
from reelstream.settings import Settings
from reelstream.supervisor import ChildSpec, Supervisor, stop_supervisor
from schemas import redis_keys

__all__ = [
    "SystemPlan",
    "archive_available",
    "child_specs",
    "down",
    "gateway_url",
    "managed_processes",
    "prepare",
    "up",
]

READY_TIMEOUT_S = 120.0
#: Order matters: ``down`` stops these first (producers before consumers before servers).
APP_PROCESSES = ("replay", "gateway", "archive", "worker", "retrain")


@dataclass(frozen=True)
class SystemPlan:
    """What ``reelstream up`` should run."""

    workers: int = 1
    replay: bool = True
    replay_rate: float = 200.0  #: events per second: slow enough to watch lists change
    #: run ``reelstream retrain`` every this many hours (a supervised child); None: never
    retrain_every_hours: float | None = None
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
    client = redis_client(settings.redis_url)
    try:
        raw = client.hgetall(redis_keys.SEED)
    finally:
        client.close()
    return {k.decode(): v.decode() for k, v in raw.items()} if raw else None


def _seed(settings: Settings, store_version: int | None, echo: Callable[[str], None]) -> str:
    """Build Redis unless ``rs:seed`` already holds this store and model version, complete.

    Missing, stale (another store or model: user states depend on the weights, so a model trained by this
    ``up`` invalidates them all) or partial: ``reelstream rebuild``, which is the seed of HISTORY plus every
    archived event (``docs/durability.md``), so events whose log the memory-only broker lost are kept; the
    worker then reads the log from the fences the rebuild leaves.
    """
    marker = _seed_marker(settings)
    model_version = _model_version(settings)
    if (
        marker is not None and marker.get("status") == "done"
        and marker.get("store_version") == str(store_version) and marker.get("model_version") == model_version
    ):  # fmt: skip
        return f"seed    reusing HISTORY in Redis (store v{store_version}, model {model_version})"
    _run_step(_cli("rebuild"), "building Redis from HISTORY and the archive", echo)
    return f"seed    HISTORY and the archive applied to Redis (store v{store_version}, model {model_version})"


def _worker_names(settings: Settings) -> list[str]:
    return sorted(p.stem for p in settings.run_dir.glob("worker-*.pid"))


def managed_processes(settings: Settings) -> dict[str, int]:
    """Name -> pid of every application process ``up`` started that is still alive.

    Not for the supervisor: ``infra.running_pid`` reaps a dead child of the calling process and so
    loses its exit status (reelstream/supervisor.py).
    """
    names = ["replay", "gateway", "archive", "retrain", *_worker_names(settings)]
    alive = {}
    for name in names:
        pid = infra.running_pid(settings.run_dir, name)
        if pid is not None:
            alive[name] = pid
    return alive


def gateway_url(settings: Settings) -> str:
    """Where a client on this machine reaches the gateway (a wildcard bind is reached on loopback)."""
    host = "127.0.0.1" if settings.gateway_host in {"0.0.0.0", "::"} else settings.gateway_host
    return f"http://{host}:{settings.gateway_port}"


def _gateway_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code in {200, 503}
    except httpx.HTTPError:
        return False


def _worker_heartbeat(settings: Settings) -> bool:
    client = redis_client(settings.redis_url, timeout=1.0)
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
    lines.append(_seed(settings, store_version, echo))
    return lines


def archive_available() -> bool:
    """True once ``reelstream archive`` is a registered command (``up`` runs it like a worker)."""
    from typer.main import get_command

    from reelstream.cli import app

    return "archive" in get_command(app).commands  # type: ignore[attr-defined]


def _child_env(settings: Settings, plan: SystemPlan) -> dict[str, str]:
    """What the children need on top of this environment: ``.env`` (they run in ``var/run/``) and the plan's."""
    env_file = settings.model_config.get("env_file")
    dotenv = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if isinstance(env_file, str) else {}
    return {**{k: v for k, v in dotenv.items() if k not in os.environ}, **plan.extra_env}


def _start_infra(settings: Settings, name: str) -> int:
    """(Re)start the local broker or Redis (``infra.up`` starts what does not answer); topics after a broker."""
    infra.up(settings)
    if name == "broker":  # a fresh memory-only broker has no topics: create them before anyone auto-creates them
        from streams.admin import ensure_topics_sync

        ensure_topics_sync(settings)
    pid = infra.running_pid(settings.run_dir, name)
    if pid is None:
        raise InfraError(f"{name} answers but was not started by reelstream; not supervising it")
    return pid


def child_specs(settings: Settings, plan: SystemPlan) -> dict[str, ChildSpec]:
    """How ``up`` starts, and the supervisor restarts, each process of ``plan`` (by name)."""
    env, run_dir = _child_env(settings, plan), settings.run_dir

    def app(name: str, *args: str) -> ChildSpec:
        return ChildSpec(name, lambda: infra.spawn(run_dir, name, _cli(*args), env=env))

    specs = {name: ChildSpec(name, lambda name=name: _start_infra(settings, name)) for name in ("broker", "redis")}
    for i in range(plan.workers):
        specs[f"worker-{i}"] = app(f"worker-{i}", "worker", "--web-port", str(settings.worker_web_port + i))
    if archive_available():
        specs["archive"] = app("archive", "archive")
    specs["gateway"] = app("gateway", "gateway")
    if plan.replay:
        replay = app("replay", "replay", "--rate", f"{plan.replay_rate:g}", "--resume")
        specs["replay"] = ChildSpec("replay", replay.start, restart_on_success=False)  # exit 0: stream done
    if plan.retrain_every_hours:
        specs["retrain"] = app("retrain", "retrain", "--every-hours", f"{plan.retrain_every_hours:g}")
    return specs


def _admin_line(settings: Settings) -> str:
    """Check the admin token and the gateway's bind before anything starts; the summary line about it."""
    token = settings.admin_secret(settings.gateway_host)
    if settings.admin_token_explicit:
        return "admin   token from REELSTREAM_ADMIN_TOKEN (not shown)"
    return (
        f"admin   token {token}  (generated once, in {settings.admin_token_path}, mode 0600; "
        "set REELSTREAM_ADMIN_TOKEN to choose one)"
    )


def _wait(supervisor: Supervisor, ready: Callable[[], bool], what: str) -> None:
    """Wait for ``ready`` while supervising: a child that dies meanwhile is restarted (or is a crash loop)."""

    def check() -> bool:
        supervisor.check()
        return ready()

    infra.wait_until(check, READY_TIMEOUT_S, what, 0.2)


def up(
    settings: Settings, plan: SystemPlan, echo: Callable[[str], None], supervisor: Supervisor | None = None
) -> list[str]:
    """Bring the system up under ``supervisor``; returns one summary line per component.

    Raises ConfigError (nothing started) for an unusable admin token or a non-loopback gateway bind
    without an explicit one, and :class:`~reelstream.supervisor.CrashLoop` when a child keeps dying.
    """
    supervisor = supervisor or Supervisor(settings, echo)
    admin_line = _admin_line(settings)
    lines = infra.up(settings)
    lines += prepare(settings, echo)

    run_dir = settings.run_dir
    specs = child_specs(settings, plan)

    def ensure(name: str) -> int | None:
        """Adopt ``name`` when it runs, else start it; None when it was already running."""
        pid = infra.running_pid(run_dir, name)
        if pid is None:
            supervisor.start(specs[name])
            return supervisor.children[name].pid
        supervisor.adopt(specs[name], pid)
        return None

    for name in ("broker", "redis"):  # only those this project started: an external one is not ours to restart
        pid = infra.running_pid(run_dir, name)
        if pid is not None:
            supervisor.adopt(specs[name], pid)
    for i in range(plan.workers):
        name = f"worker-{i}"
        started = ensure(name) is not None
        port = settings.worker_web_port + i
        lines.append(f"{name} started (web port {port})" if started else f"{name} already running")
    if "archive" in specs:
        lines.append("archive started" if ensure("archive") is not None else "archive already running")
    _wait(supervisor, lambda: _worker_heartbeat(settings), "worker heartbeat in Redis")

    url = gateway_url(settings)
    pid = infra.running_pid(run_dir, "gateway")
    if pid is None and not _gateway_answers(url):
        supervisor.start(specs["gateway"])
        lines.append(f"gateway started at {url}")
    else:
        if pid is not None:
            supervisor.adopt(specs["gateway"], pid)
        lines.append(f"gateway already answering at {url}")
    _wait(supervisor, lambda: _gateway_answers(url), f"gateway at {url}")

    if plan.replay:
        if ensure("replay") is not None:
            lines.append(f"replay  started at {plan.replay_rate:g} events/s (resumes from its checkpoint)")
        else:
            lines.append("replay  already running")
    if plan.retrain_every_hours:
        started = ensure("retrain") is not None
        every = f"every {plan.retrain_every_hours:g} h (promotes only a better challenger, hot swap)"
        lines.append(f"retrain {'scheduled' if started else 'already scheduled'} {every}")
    lines.append(admin_line)
    return lines


def down(settings: Settings) -> list[str]:
    """Make the supervisor let go, then stop every process ``up`` started, then the local broker and Redis."""
    lines = []
    pid = stop_supervisor(settings)
    if pid is not None:
        lines.append(f"supervisor (pid {pid}) let go; stopping what it supervised")
    for name in ("retrain", "replay", "gateway", "archive", *_worker_names(settings)):
        if infra.stop_process(settings.run_dir, name):
            lines.append(f"{name:<8} stopped")
    lines.extend(infra.down(settings))
    return lines


def log_path(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.log"
