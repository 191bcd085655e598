"""The whole live system in one command: infrastructure, data, model, worker(s), archive, gateway, replay.

``up`` is idempotent: it starts only what is not running and builds only what is
missing (the feature store, a model trained on the current store version, the
HISTORY seed of Redis for that store and model: ``reelstream seed``), so a
second ``up`` reuses everything.

**Datasets.** ``up --data DIR`` (and ``prepare --data DIR``) serve any MovieLens-format folder. The store is
bootstrapped again only when its CURRENT version was built from another folder or the folder's files changed
(:func:`dataset_change`, from the source path, sizes, mtimes and sha256 digests the bootstrap records); without
``--data`` the CURRENT store is reused whatever it was built from (the bundled dataset when there is none). A new
store makes every event of the old one foreign: the topics, the archive, the replay checkpoint and Redis hold the
old dataset's events and users. :func:`retire_event_log` empties them before the bootstrap, so the rebuild folds
the new HISTORY alone and the worker, which starts each partition at its fence or, without one, at the beginning
of the log, reads only the new dataset's events. ``var/store/events.json`` records whose events they hold, so a
store bootstrapped from another folder outside ``up`` (``reelstream bootstrap --data``) retires them too
(:func:`events_owner_change`).

Every process ``up`` starts or finds running is handed to a :class:`~reelstream.shell.supervisor.Supervisor`, which
restarts what crashes (from the first spawn on, so a child dying during start-up is restarted too) and raises
:class:`~reelstream.shell.supervisor.CrashLoop` when one keeps dying.
``down`` first makes the supervisor let go, then stops, in reverse order, every
process that ``up`` started (never an external broker or Redis). Each
long-running process is a ``reelstream`` sub-command with its own pid and log
file in ``var/run/``; children get the settings of ``up`` itself, ``.env``
included (they run in ``var/run/``, where no ``.env`` is).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from dotenv import dotenv_values

from reelstream.addresses import gateway_url
from reelstream.errors import InfraError, ReelstreamError
from reelstream.redis_client import redis_client
from reelstream.settings import Settings
from reelstream.shell import local_services
from reelstream.shell.supervisor import ChildSpec, Supervisor, stop_supervisor
from schemas import redis_keys

__all__ = [
    "SystemPlan",
    "archive_available",
    "child_specs",
    "dataset_change",
    "down",
    "events_owner_change",
    "gateway_answers",
    "managed_processes",
    "prepare",
    "retire_event_log",
    "up",
    "worker_heartbeat",
]

READY_TIMEOUT_S = 120.0
#: Order matters: ``down`` stops these first (producers before consumers before servers).
APP_PROCESSES = ("replay", "gateway", "archive", "worker", "retrain")


@dataclass(frozen=True)
class SystemPlan:
    """What ``reelstream up`` should run."""

    workers: int = 1
    #: gateway processes on the gateway port (``reelstream gateway --workers``)
    gateways: int = 1
    replay: bool = True
    #: events per second: slow enough to watch lists change; 0: as fast as the system takes (the producer's
    #: buffer is bounded, so it waits on the broker's acknowledgements instead of flooding it)
    replay_rate: float = 200.0
    #: the fraction of users whose list the replay asks the gateway for before each of their events
    #: (``replay --serve-rate``): the demo's serving traffic, recorded as impressions
    serve_rate: float = 0.1
    #: the MovieLens-format folder to serve; None: the CURRENT store's, else ``settings.data_path``
    data: Path | None = None
    #: run ``reelstream retrain`` every this many hours (a supervised child); None: never
    retrain_every_hours: float | None = None
    extra_env: dict[str, str] = field(default_factory=dict)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "reelstream.shell.cli", *args]


def _run_step(argv: list[str], what: str, echo: Callable[[str], None]) -> None:
    """Run a one-shot sub-command in the foreground (its progress shows); fail loudly."""
    echo(f"[bold]{what}[/] ...")
    result = subprocess.run(argv, check=False)
    if result.returncode != 0:
        raise ReelstreamError(f"{what} failed (exit {result.returncode}); see its message above")


def _store_metadata(settings: Settings) -> dict[str, Any] | None:
    """The CURRENT store version's metadata (a small file: no frame is read), or None without a usable one."""
    pointer = settings.store_dir / "CURRENT"
    if not pointer.exists():
        return None
    meta = settings.store_dir / pointer.read_text().strip() / "metadata.json"
    try:
        doc = json.loads(meta.read_text())
        int(doc["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc if isinstance(doc, dict) else None


def _store_version(settings: Settings) -> int | None:
    meta = _store_metadata(settings)
    return None if meta is None else int(meta["version"])


def dataset_change(settings: Settings, data: Path | None) -> str | None:
    """Why ``prepare`` must bootstrap (no store, or the CURRENT one is not ``data`` as it is now); None: reuse it.

    Without ``data`` any CURRENT store is reused: the dataset a ``prepare --data`` chose stays until another is named.
    """
    from bootstrap.pipeline import source_change  # polars: only for a dataset named

    meta = _store_metadata(settings)
    if meta is None:
        return "no feature store yet"
    if data is None:
        return None
    change = source_change(meta, data)
    return None if change is None else f"store v{meta['version']} {change}"


def _events_path(settings: Settings) -> Path:
    """Whose events the topics, the archive and Redis hold: the dataset identity of the store they were made for."""
    return settings.store_dir / "events.json"


def _identity(meta: dict[str, Any]) -> dict[str, Any]:
    """A dataset's identity: its folder and file digests (an appended store keeps its dataset's)."""
    return {"source": meta.get("source"), "source_checksums": meta.get("source_checksums", {})}


def events_owner_change(settings: Settings) -> str | None:
    """Why the event log holds another dataset's events than the CURRENT store's (a ``reelstream bootstrap`` of
    another folder outside ``up``), or None: the same dataset, no store, or a var folder from before the record.
    """
    meta = _store_metadata(settings)
    try:
        owner = json.loads(_events_path(settings).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"{_events_path(settings)} is unreadable"
    if meta is None or owner == _identity(meta):
        return None
    held, store = owner.get("source"), meta.get("source")
    return f"the event log holds the events of {held}, the store v{meta['version']} is {store}"


def _record_events_owner(settings: Settings) -> None:
    meta = _store_metadata(settings)
    if meta is not None:
        path = _events_path(settings)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(_identity(meta)))
        tmp.replace(path)


def _refuse_switch(running: list[str]) -> None:
    if running:
        raise ReelstreamError(
            f"the current dataset's events are in use by {', '.join(running)}: run `reelstream down` first, "
            "then `up --data` again (a new dataset starts the event log afresh)"
        )


def retire_event_log(settings: Settings) -> list[str]:
    """Empty what holds the events of the store being replaced, so none of them reaches the next store's state.

    Refused while a process of the system runs (it would read, archive or replay the old log meanwhile). Then:
    the topics are deleted and created again (empty: the worker starts a partition without a fence at the
    beginning of the log, which now holds only what is produced from here on); the archive, which a rebuild
    folds into Redis, moves to ``var/store/retired/``; the replay checkpoint is deleted (it names the old
    stream); and ``rs:seed`` is deleted, so Redis counts as missing and the next rebuild deletes every feature
    key before it folds the new HISTORY (a store version number alone can repeat when ``var/store`` was wiped).
    """
    from streams.admin import recreate_topics_sync
    from streams.seed import live_workers

    _refuse_switch(sorted(managed_processes(settings)))
    client = redis_client(settings.redis_url)
    try:
        deadline = time.monotonic() + settings.worker_heartbeat_ttl_s + 1
        while live_workers(client) and time.monotonic() < deadline:  # a worker just stopped: its key expires
            time.sleep(0.2)  # polling a key's expiry: nothing to wait on
        _refuse_switch([f"worker {name} (heartbeat in Redis)" for name in live_workers(client)])
        statuses = recreate_topics_sync(settings)
        lines = [f"topics  {len(statuses)} deleted and created again, empty (they held the old dataset's events)"]
        archive = settings.archive_dir
        if archive.exists() and any(archive.iterdir()):
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            target = settings.store_dir / "retired" / f"archive-{stamp}"
            target.parent.mkdir(parents=True, exist_ok=True)
            archive.rename(target)
            lines.append(f"archive the old dataset's archive moved to {target} (delete it when not needed)")
        if settings.replay_checkpoint.exists():
            settings.replay_checkpoint.unlink()
            lines.append("replay  the old dataset's checkpoint deleted (the new STREAM replays from its start)")
        client.delete(redis_keys.SEED)
    finally:
        client.close()
    return lines


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
    return redis_keys.text_hash(raw) if raw else None


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

    Not for the supervisor: ``local_services.running_pid`` reaps a dead child of the calling process and so
    loses its exit status (reelstream/shell/supervisor.py).
    """
    names = ["replay", "gateway", "archive", "retrain", *_worker_names(settings)]
    alive = {}
    for name in names:
        pid = local_services.running_pid(settings.run_dir, name)
        if pid is not None:
            alive[name] = pid
    return alive


def gateway_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code in {200, 503}
    except httpx.HTTPError:
        return False


def worker_heartbeat(settings: Settings) -> bool:
    client = redis_client(settings.redis_url, timeout=1.0)
    try:
        return any(True for _ in client.scan_iter(match=redis_keys.worker("*"), count=100))
    except redis.RedisError:
        return False
    finally:
        client.close()


def prepare(settings: Settings, echo: Callable[[str], None], data: Path | None = None) -> list[str]:
    """Topics, feature store (of ``data``: see :func:`dataset_change`), model and seeded HISTORY, each built only
    when missing or stale.

    Idempotent, and needs only a reachable broker and Redis: ``up`` runs it after the local
    infrastructure; the docker-compose ``init`` service runs it (``reelstream prepare``) against
    Apache Kafka and Redis 7. A new store first retires the old event log (:func:`retire_event_log`);
    a crash between the two is harmless, as the next run still finds the old store and retires again.
    """
    lines = []
    _run_step(_cli("topics", "create"), "creating topics", echo)

    reason = dataset_change(settings, data)
    if reason is not None:
        source = data if data is not None else settings.data_path
        lines.append(f"store   building from {source}: {reason}")
        lines += retire_event_log(settings)
        _run_step(_cli("bootstrap", "--data", str(source)), f"bootstrapping {source}", echo)
        store_version = _store_version(settings)
        lines.append(f"store   built version {store_version}")
    else:
        store_version = _store_version(settings)
        lines.append(f"store   reusing version {store_version}")
        foreign = events_owner_change(settings)
        if foreign is not None:
            lines.append(f"events  retiring the event log: {foreign}")
            lines += retire_event_log(settings)
    _record_events_owner(settings)  # after the retirement: a crash before it retires again, harmlessly
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

    from reelstream.shell.cli import app

    return "archive" in get_command(app).commands  # type: ignore[attr-defined]


def _child_env(settings: Settings, plan: SystemPlan) -> dict[str, str]:
    """What the children need on top of this environment: ``.env`` (they run in ``var/run/``) and the plan's."""
    env_file = settings.model_config.get("env_file")
    dotenv = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if isinstance(env_file, str) else {}
    chosen = {} if plan.data is None else {"REELSTREAM_DATA_PATH": str(plan.data.resolve())}
    return {**{k: v for k, v in dotenv.items() if k not in os.environ}, **chosen, **plan.extra_env}


def _start_infra(settings: Settings, name: str) -> int:
    """(Re)start the local broker or Redis (``local_services.up`` starts what does not answer); then topics."""
    local_services.up(settings)
    if name == "broker":  # a fresh memory-only broker has no topics: create them before anyone auto-creates them
        from streams.admin import ensure_topics_sync

        ensure_topics_sync(settings)
    pid = local_services.running_pid(settings.run_dir, name)
    if pid is None:
        raise InfraError(f"{name} answers but was not started by reelstream; not supervising it")
    return pid


def child_specs(settings: Settings, plan: SystemPlan) -> dict[str, ChildSpec]:
    """How ``up`` starts, and the supervisor restarts, each process of ``plan`` (by name)."""
    env, run_dir = _child_env(settings, plan), settings.run_dir

    def app(name: str, *args: str) -> ChildSpec:
        return ChildSpec(name, lambda: local_services.spawn(run_dir, name, _cli(*args), env=env))

    specs = {name: ChildSpec(name, functools.partial(_start_infra, settings, name)) for name in ("broker", "redis")}
    for i in range(plan.workers):
        specs[f"worker-{i}"] = app(f"worker-{i}", "worker", "--web-port", str(settings.worker_web_port + i))
    if archive_available():
        specs["archive"] = app("archive", "archive")
    specs["gateway"] = app("gateway", "gateway", "--workers", str(plan.gateways))
    if plan.replay:
        pace = ("--rate", f"{plan.replay_rate:g}") if plan.replay_rate > 0 else ("--max",)
        replay = app("replay", "replay", *pace, "--resume", "--serve-rate", f"{plan.serve_rate:g}")
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

    local_services.wait_until(check, READY_TIMEOUT_S, what, 0.2)


def up(
    settings: Settings, plan: SystemPlan, echo: Callable[[str], None], supervisor: Supervisor | None = None
) -> list[str]:
    """Bring the system up under ``supervisor``; returns one summary line per component.

    Raises ConfigError (nothing started) for an unusable admin token or a non-loopback gateway bind
    without an explicit one, and :class:`~reelstream.shell.supervisor.CrashLoop` when a child keeps dying.
    """
    supervisor = supervisor or Supervisor(settings, echo)
    admin_line = _admin_line(settings)
    lines = local_services.up(settings)
    lines += prepare(settings, echo, plan.data)

    run_dir = settings.run_dir
    specs = child_specs(settings, plan)

    def ensure(name: str) -> int | None:
        """Adopt ``name`` when it runs, else start it; None when it was already running."""
        pid = local_services.running_pid(run_dir, name)
        if pid is None:
            supervisor.start(specs[name])
            return supervisor.children[name].pid
        supervisor.adopt(specs[name], pid)
        return None

    for name in ("broker", "redis"):  # only those this project started: an external one is not ours to restart
        pid = local_services.running_pid(run_dir, name)
        if pid is not None:
            supervisor.adopt(specs[name], pid)
    for i in range(plan.workers):
        name = f"worker-{i}"
        started = ensure(name) is not None
        port = settings.worker_web_port + i
        lines.append(f"{name} started (web port {port})" if started else f"{name} already running")
    if "archive" in specs:
        lines.append("archive started" if ensure("archive") is not None else "archive already running")
    _wait(supervisor, lambda: worker_heartbeat(settings), "worker heartbeat in Redis")

    url = gateway_url(settings.gateway_host, settings.gateway_port)
    pid = local_services.running_pid(run_dir, "gateway")
    if pid is None and not gateway_answers(url):
        supervisor.start(specs["gateway"])
        lines.append(f"gateway started at {url}")
    else:
        if pid is not None:
            supervisor.adopt(specs["gateway"], pid)
        lines.append(f"gateway already answering at {url}")
    _wait(supervisor, lambda: gateway_answers(url), f"gateway at {url}")

    if plan.replay:
        if ensure("replay") is not None:
            pace = f"at {plan.replay_rate:g} events/s" if plan.replay_rate > 0 else "as fast as the system takes"
            served = f", asking the gateway for {plan.serve_rate:.0%} of users' lists" if plan.serve_rate else ""
            lines.append(f"replay  started {pace}{served} (resumes from its checkpoint)")
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
        if local_services.stop_process(settings.run_dir, name):
            lines.append(f"{name:<8} stopped")
    lines.extend(local_services.down(settings))
    return lines


def log_path(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.log"
