"""``reelstream up`` supervises: crashed children come back, the rest keeps running, a crash loop stops everything.

Two layers, both with real processes. The :class:`~reelstream.shell.supervisor.Supervisor` itself, on tiny
Python children (exit codes, signals, backoff, a child reaped behind its back, an adopted process, the
replay's clean exit). Then ``reelstream up`` in the foreground on its own broker, Redis and ports (the
store and a tiny model pre-built, as in tests/test_system_lifecycle.py): ``kill -9`` of the worker while
ratings keep arriving through the gateway, ``kill -9`` of the gateway, ``reelstream down`` from another
process, and a gateway that can never start (its port taken), which is a crash loop.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import polars as pl
import psutil
import pytest
import redis

from models.runtime import ModelRuntime
from reelstream.settings import Settings
from reelstream.shell import live_system, local_services
from reelstream.shell.supervisor import ChildSpec, CrashLoop, Supervisor, backoff_s
from schemas import redis_keys as keys
from streams.admin import ensure_topics_sync
from streams.store import redis_snapshot
from tests.live_system import install_var
from tests.stream_support import diff_states, reference_state, wait_for

# --- the supervisor on tiny children -------------------------------------------------------------


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values = {"supervisor_backoff_s": 0.05, "supervisor_backoff_max_s": 0.2, "supervisor_poll_s": 0.05} | overrides
    return Settings(var_dir=tmp_path / "var", **values)  # type: ignore[arg-type]


def _python(run_dir: Path, name: str, code: str) -> ChildSpec:
    """A child running ``code``, started like ``up`` starts its children (own session, log, pid file)."""
    return ChildSpec(name, lambda: local_services.spawn(run_dir, name, [sys.executable, "-c", code]))


def _log(settings: Settings) -> str:
    path = settings.run_dir / "supervisor.log"
    return path.read_text() if path.exists() else ""


def _kill_all(sup: Supervisor) -> None:
    for child in sup.children.values():
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


#: Exits 3 on its first run, then stays up: one crash, one restart.
CRASH_ONCE = (
    "import pathlib, sys, time\np = pathlib.Path('crashed')\n"
    "if not p.exists():\n    p.touch(); sys.exit(3)\ntime.sleep(120)"
)


def test_backoff_doubles_per_crash_up_to_the_cap(tmp_path: Path) -> None:
    settings = _settings(tmp_path, supervisor_backoff_s=0.5, supervisor_backoff_max_s=3.0)
    assert [backoff_s(settings, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_crash_is_logged_with_its_exit_code_or_signal_and_restarted(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    lines: list[str] = []
    sup = Supervisor(settings, lines.append)
    try:
        first = sup.start(_python(settings.run_dir, "child", CRASH_ONCE))
        wait_for(lambda: (sup.check(), "child restarted" in _log(settings))[1], 30, "the restart after exit 3")
        second = sup.children["child"].pid
        assert second != first and psutil.Process(second).is_running()
        log = settings.run_dir / "child.log"
        assert f"child (pid {first}) exited with exit code 3; restarting in 0.1 s" in _log(settings)
        assert f"log: {log}" in _log(settings) and any("exit code 3" in line for line in lines)

        os.kill(second, signal.SIGKILL)
        wait_for(lambda: (sup.check(), _log(settings).count("child restarted") == 2)[1], 30, "the restart after -9")
        assert f"child (pid {second}) killed by SIGKILL; restarting in 0.1 s (crash 2 of 5" in _log(settings)
    finally:
        _kill_all(sup)


def test_a_crash_loop_stops_with_the_child_and_its_log(tmp_path: Path) -> None:
    settings = _settings(tmp_path, supervisor_crash_limit=3)
    sup = Supervisor(settings, lambda _: None)
    sup.start(_python(settings.run_dir, "doomed", "import sys; sys.exit(7)"))
    with pytest.raises(CrashLoop) as caught:
        wait_for(lambda: (sup.check(), False)[1], 60, "a crash loop")
    message = str(caught.value)
    assert message.startswith("doomed crashed 3 times within 60 s (last: pid ")
    assert "exited with exit code 7" in message and str(settings.run_dir / "doomed.log") in message
    assert message in _log(settings)
    assert _log(settings).count("doomed restarted") == 2


def test_a_child_reaped_elsewhere_is_still_seen_to_exit(tmp_path: Path) -> None:
    """``local_services.running_pid`` (or subprocess's clean-up) may reap first: the supervisor must notice anyway."""
    settings = _settings(tmp_path)
    sup = Supervisor(settings, lambda _: None)
    try:
        pid = sup.start(_python(settings.run_dir, "child", CRASH_ONCE))
        wait_for(
            lambda: local_services.running_pid(settings.run_dir, "child") is None, 30, "running_pid to reap the child"
        )
        wait_for(lambda: (sup.check(), "child restarted" in _log(settings))[1], 30, "the restart")
        assert f"child (pid {pid}) exited (exit status unknown: not reaped by this supervisor)" in _log(settings)
    finally:
        _kill_all(sup)


def test_an_adopted_process_is_restarted_when_it_dies(tmp_path: Path) -> None:
    """A process an earlier ``up`` started (not this process's child: no exit status, only liveness)."""
    settings = _settings(tmp_path)
    spec = _python(settings.run_dir, "child", "import time; time.sleep(120)")
    launcher = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
                " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,"
                " start_new_session=True); print(p.pid)")  # fmt: skip
    orphan = int(subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, check=True).stdout)
    sup = Supervisor(settings, lambda _: None)
    try:
        sup.adopt(spec, orphan)
        sup.check()
        assert "child" not in _log(settings)  # alive: nothing to do
        os.kill(orphan, signal.SIGKILL)
        wait_for(lambda: (sup.check(), "child restarted" in _log(settings))[1], 30, "the adopted child's restart")
        assert f"child (pid {orphan}) exited (exit status unknown" in _log(settings)
        assert sup.children["child"].proc is not None  # now a child of the supervisor
    finally:
        _kill_all(sup)
        if psutil.pid_exists(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_replay_exit_0_is_done_and_a_failure_is_restarted(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    sup = Supervisor(settings, lambda _: None)
    done = _python(settings.run_dir, "replay", "import sys; sys.exit(0)")
    failing = _python(settings.run_dir, "replay2", CRASH_ONCE)
    try:
        sup.start(ChildSpec(done.name, done.start, restart_on_success=False))
        sup.start(ChildSpec(failing.name, failing.start, restart_on_success=False))
        wait_for(lambda: (sup.check(), "replay2 restarted" in _log(settings))[1], 30, "replay2's restart")
        wait_for(lambda: (sup.check(), sup.children["replay"].finished)[1], 30, "the replay to finish")
        assert "finished (exit code 0); not restarted" in _log(settings) and "replay restarted" not in _log(settings)
    finally:
        _kill_all(sup)


def test_a_killed_local_broker_comes_back_with_its_topics(tmp_path: Path) -> None:
    """The broker's restart is ``up``'s own (``live_system.child_specs``): a fresh memory-only broker gets topics."""
    settings = _settings(tmp_path, kafka_bootstrap=f"127.0.0.1:{local_services.free_port()}",
                         redis_url=f"redis://127.0.0.1:{local_services.free_port()}/0")  # fmt: skip
    local_services.up(settings)
    sup = Supervisor(settings, lambda _: None)
    try:
        ensure_topics_sync(settings)
        old = local_services.running_pid(settings.run_dir, "broker")
        assert old is not None
        sup.adopt(live_system.child_specs(settings, live_system.SystemPlan(replay=False))["broker"], old)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: (sup.check(), "broker restarted" in _log(settings))[1], 60, "the broker's restart")
        assert f"broker (pid {old}) killed by SIGKILL" in _log(settings)
        assert local_services.broker_answers(settings.kafka_bootstrap) and sup.children["broker"].pid != old
        statuses = ensure_topics_sync(settings)
        assert [(t.name, t.partitions, t.created) for t in statuses] == [
            (name, settings.topic_partitions, False) for name in settings.topics
        ]  # created by the restart, before anyone could auto-create them
    finally:
        local_services.down(settings)


# --- reelstream up, supervising ---------------------------------------------------------------

USER = 700_001  #: not in ml-latest-small (610 users) and below the probe ids: only this test's ratings
UP_READY = "Supervising: a crashed process is restarted"


@dataclass
class UpProcess:
    """A foreground ``reelstream up`` on its own ports, var folder and output file."""

    env: dict[str, str]
    settings: Settings
    runtime: ModelRuntime
    proc: subprocess.Popen[bytes]
    out: Path
    base: str

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def pid(self, name: str) -> int:
        return int((self.settings.run_dir / f"{name}.pid").read_text())

    def log(self) -> str:
        path = self.settings.run_dir / "supervisor.log"
        return path.read_text() if path.exists() else ""

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"up exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            return UP_READY in self.output()

        wait_for(ready, 600, "reelstream up to start everything", interval=0.5)


def _start_up(tmp_path: Path, built_var: Path, *args: str, **extra: str) -> UpProcess:
    var = tmp_path / "var"
    env = {
        **{k: v for k, v in os.environ.items() if k != "REELSTREAM_ADMIN_TOKEN"},
        "REELSTREAM_VAR_DIR": str(var),
        "KAFKA_BOOTSTRAP": f"127.0.0.1:{local_services.free_port()}",
        "REDIS_URL": f"redis://127.0.0.1:{local_services.free_port()}/0",
        "REELSTREAM_GATEWAY_PORT": str(local_services.free_port()),
        "REELSTREAM_WORKER_WEB_PORT": str(local_services.free_port()),
        "REELSTREAM_PROBE_INTERVAL_S": "0",  # no probe ratings: less load, nothing but this test's events
        **extra,
    }
    settings = Settings(var_dir=var, kafka_bootstrap=env["KAFKA_BOOTSTRAP"], redis_url=env["REDIS_URL"],
                        gateway_port=int(env["REELSTREAM_GATEWAY_PORT"]))  # fmt: skip
    runtime = install_var(settings, built_var)
    out = tmp_path / "up.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "reelstream.shell.cli", "up", *args], env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)  # fmt: skip
    return UpProcess(env, settings, runtime, proc, out, f"http://127.0.0.1:{settings.gateway_port}")


def _stop(up: UpProcess) -> None:
    """Whatever a test left: ``down``, then make sure ``up`` itself is gone."""
    subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "down"], env=up.env, capture_output=True, timeout=300,
                   check=False)  # fmt: skip
    if up.proc.poll() is None:
        up.proc.send_signal(signal.SIGTERM)
        try:
            up.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(up.proc.pid, signal.SIGKILL)
            up.proc.wait(timeout=30)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def up_system(tmp_path_factory: pytest.TempPathFactory, built_var: Path) -> Iterator[UpProcess]:
    tmp = tmp_path_factory.mktemp("up-supervised")
    # A second between a crash and its restart: room to produce while the worker is surely dead.
    up = _start_up(tmp, built_var, "--no-replay", REELSTREAM_SUPERVISOR_BACKOFF_S="1.0")
    try:
        up.wait_ready()
        yield up
    finally:
        _stop(up)


def _user_version(client: redis.Redis) -> int:
    raw = client.hget(keys.user(USER), "version")
    return int(raw) if raw is not None else 0


def test_worker_kill9_is_restarted_and_applies_what_it_missed(up_system: UpProcess) -> None:
    up = up_system
    client = redis.Redis.from_url(up.settings.redis_url, socket_timeout=5)
    movies = pl.read_parquet(next(up.settings.store_dir.glob("v*/items.parquet")))["movie_id"].to_list()[:6]
    start_s = int(time.time()) - 60
    rows = [(USER, movies[i], 0.5 + (i % 10) / 2, start_s + i) for i in range(6)]  # whole seconds: the reference's
    broker, redis_pid, worker = up.pid("broker"), up.pid("redis"), up.pid("worker-0")

    with httpx.Client(base_url=up.base, timeout=10) as http:

        def post(row: tuple[int, int, float, int]) -> None:
            body = {"user_id": row[0], "movie_id": row[1], "rating": row[2], "event_ts": row[3] * 1000}
            resp = http.post("/ratings", json=body)
            assert resp.status_code == 202, resp.text

        for row in rows[:2]:
            post(row)
        wait_for(lambda: _user_version(client) == 2, 60, "the first two ratings applied")

        os.kill(worker, signal.SIGKILL)
        for row in rows[2:5]:  # accepted by the broker while no worker runs (the restart waits a second)
            post(row)
        assert _user_version(client) == 2
        wait_for(lambda: f"worker-0 (pid {worker}) killed by SIGKILL; restarting in 1.0 s" in up.log(), 30,
                 "the supervisor to log the crash")  # fmt: skip
        wait_for(lambda: "worker-0 restarted" in up.log() and up.pid("worker-0") != worker, 30, "the restart")
        assert _alive(up.pid("worker-0"))
        assert (
            up.pid("broker") == broker and _alive(broker) and local_services.broker_answers(up.settings.kafka_bootstrap)
        )
        assert (
            up.pid("redis") == redis_pid and _alive(redis_pid) and local_services.redis_answers(up.settings.redis_url)
        )
        assert up.proc.poll() is None and str(up.settings.run_dir / "worker-0.log") in up.log()

        post(rows[5])  # after the restart: once it is applied, everything before it has been too
        wait_for(lambda: _user_version(client) >= 6, 180, "the restarted worker to apply the missed ratings")

    reference = reference_state(up.settings, up.runtime, rows)
    expected = {k: v for k, v in reference.items() if k.startswith(keys.user(USER))}
    got = redis_snapshot(client, f"{keys.user(USER)}*")
    assert set(got) == set(expected) and _user_version(client) == 6  # each rating applied once: none lost, none twice
    assert diff_states(expected, got) == []
    client.close()


def test_gateway_kill9_is_restarted_and_answers_again(up_system: UpProcess) -> None:
    up = up_system
    gateway, worker = up.pid("gateway"), up.pid("worker-0")
    os.kill(gateway, signal.SIGKILL)
    wait_for(lambda: f"gateway (pid {gateway}) killed by SIGKILL" in up.log(), 30, "the supervisor to log the crash")

    def answers() -> bool:
        try:
            return httpx.get(f"{up.base}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(lambda: up.pid("gateway") != gateway and answers(), 120, "the restarted gateway to answer /health")
    assert _alive(up.pid("gateway")) and up.pid("worker-0") == worker and up.proc.poll() is None


def test_down_from_another_shell_stops_the_supervised_system(up_system: UpProcess) -> None:
    up = up_system
    pids = {p.stem: int(p.read_text()) for p in up.settings.run_dir.glob("*.pid")}
    assert {"broker", "redis", "worker-0", "gateway", "supervisor"} <= set(pids)
    restarts = up.log().count("restarted")
    down = subprocess.run([sys.executable, "-m", "reelstream.shell.cli", "down"], env=up.env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"supervisor (pid {up.proc.pid}) let go" in down.stdout
    assert re.search(r"worker-0\s+stopped", down.stdout) and re.search(r"broker\s+stopped", down.stdout)
    assert up.proc.wait(timeout=60) == 0
    assert "`reelstream down` took over" in up.output()
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert not list(up.settings.run_dir.glob("*.pid"))
    assert up.log().count("restarted") == restarts  # nothing was restarted behind down's back


def test_a_gateway_that_cannot_start_is_a_crash_loop_that_stops_everything(tmp_path: Path, built_var: Path) -> None:
    squatter = socket.socket()  # holds the gateway's port: every gateway start fails to bind (uvicorn exits 3)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    up = _start_up(tmp_path, built_var, "--no-replay", REELSTREAM_GATEWAY_PORT=str(port),
                   REELSTREAM_SUPERVISOR_CRASH_LIMIT="3", REELSTREAM_SUPERVISOR_BACKOFF_S="0.2")  # fmt: skip
    try:
        code = up.proc.wait(timeout=600)
        out = " ".join(up.output().split())
        log = up.settings.run_dir / "gateway.log"
        assert code == 1, out[-3000:]
        expected = (
            r"gateway crashed 3 times within 60 s \(last: pid \d+ exited with exit code 3\): a crash loop, so "
            rf"reelstream stops everything; see {re.escape(str(log))}"
        )
        assert re.search(expected, out), out[-3000:]
        assert out.count("a crash loop") == 1
        assert "address already in use" in log.read_text().lower()
        assert not list(up.settings.run_dir.glob("*.pid"))  # broker, Redis and worker stopped with it
        assert not local_services.broker_answers(up.settings.kafka_bootstrap)
    finally:
        _stop(up)
        squatter.close()
