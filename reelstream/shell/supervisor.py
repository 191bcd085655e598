"""Keep ``reelstream up``'s processes running: restart what crashes, stop everything on a crash loop.

A :class:`Supervisor` watches named children (the broker and Redis it started, worker-N, archive,
gateway, replay). A child that exits is restarted after a capped exponential backoff
(``supervisor_backoff_s`` doubled per earlier crash in the window, at most ``supervisor_backoff_max_s``);
the rest keeps running, the memory-only broker and its log included. Each crash is one line on the
console and in ``var/run/supervisor.log``: the child, its pid, its exit code or signal, its log file.
``supervisor_crash_limit`` crashes of one child within ``supervisor_crash_window_s`` is a crash loop:
:class:`CrashLoop` names the child and its log, and the caller stops the whole system.

Exit detection does not trust pid files or ``os.kill(pid, 0)``: a dead child stays a zombie (so
"alive" to a signal probe) until someone reaps it, and ``infra.running_pid`` or subprocess's clean-up of
dropped ``Popen`` objects may reap it first, losing its status. The supervisor reaps its own children
with ``waitpid`` and reads the exit status from it; a process it did not start (adopted from an earlier
``up``), or one reaped elsewhere, is judged by psutil instead: gone, a zombie, or a pid now belonging to
a process with another start time all count as an exit whose status is unknown.

One supervisor per var folder: its pid is in ``var/run/supervisor.pid``. ``reelstream down`` sends it
SIGUSR1 (stop supervising and exit, leaving the processes to ``down``) before it stops anything, so
nothing it stops is restarted; SIGINT and SIGTERM make the supervisor's own process stop everything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
from rich.markup import escape

from reelstream.errors import InfraError, ReelstreamError
from reelstream.settings import Settings

__all__ = [
    "ChildSpec",
    "CrashLoop",
    "Supervisor",
    "backoff_s",
    "claim",
    "describe_exit",
    "release",
    "stop_supervisor",
    "supervisor_pid",
]

PID_NAME = "supervisor"
LOG_NAME = "supervisor.log"
#: How long ``down`` waits for a signalled supervisor to exit before it kills it.
STOP_TIMEOUT_S = 90.0


class CrashLoop(ReelstreamError):
    """One child crashed ``supervisor_crash_limit`` times within the window; the system must stop."""


@dataclass(frozen=True)
class ChildSpec:
    """How to (re)start one supervised process."""

    name: str
    #: Starts the process; returns its ``Popen`` (a child to reap) or its pid (read from its pid file).
    start: Callable[[], subprocess.Popen[bytes] | int]
    #: False for the replay: exit code 0 means the stream is done, not a crash.
    restart_on_success: bool = True


@dataclass
class _Child:
    spec: ChildSpec
    pid: int
    started_at: float | None  #: psutil create time: tells this process from a later one given the same pid
    proc: subprocess.Popen[bytes] | None
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    finished: bool = False


def backoff_s(settings: Settings, crashes: int) -> float:
    """Delay before the restart after the ``crashes``-th crash within the window (1, 2, ...)."""
    return min(settings.supervisor_backoff_s * 2 ** max(crashes - 1, 0), settings.supervisor_backoff_max_s)


def describe_exit(code: int | None) -> str:
    """``exit code 3``, ``killed by SIGKILL`` or ``exit status unknown``."""
    if code is None:
        return "exited (exit status unknown: not reaped by this supervisor)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with exit code {code}"


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class Supervisor:
    """Restarts crashed children with capped backoff; raises :class:`CrashLoop` on a crash loop."""

    def __init__(
        self,
        settings: Settings,
        echo: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        passive: bool = False,
    ) -> None:
        self.settings = settings
        self.echo = echo
        self.clock = clock
        #: Track but never restart: for an ``up`` run while another process supervises the same var folder.
        self.passive = passive
        self.children: dict[str, _Child] = {}
        self.log_path = settings.run_dir / LOG_NAME

    # --- registering children -----------------------------------------------------------

    def start(self, spec: ChildSpec) -> int:
        """Start ``spec`` now and supervise it; returns its pid."""
        handle = spec.start()
        self._track(spec, handle)
        return self.children[spec.name].pid

    def adopt(self, spec: ChildSpec, pid: int) -> None:
        """Supervise ``pid``, already running ``spec`` (started by an earlier ``up``: its exit status is unknown)."""
        self._track(spec, pid)

    def _track(self, spec: ChildSpec, handle: subprocess.Popen[bytes] | int) -> None:
        proc, pid = (handle, handle.pid) if isinstance(handle, subprocess.Popen) else (None, handle)
        previous = self.children.get(spec.name)
        child = _Child(spec, pid, _create_time(pid), proc)
        if previous is not None:
            child.crashes = previous.crashes
        self.children[spec.name] = child

    # --- watching -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Check the children every ``supervisor_poll_s`` until ``stop`` is set; raises :class:`CrashLoop`."""
        while not stop.wait(self.settings.supervisor_poll_s):
            self.check()

    def check(self) -> None:
        """Reap exits, schedule restarts and perform those that are due (in registration order)."""
        if self.passive:
            return
        for child in list(self.children.values()):
            if child.finished:
                continue
            now = self.clock()
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child)
                continue
            ended, code = self._ended(child)
            if not ended:
                continue
            if code == 0 and not child.spec.restart_on_success:
                child.finished = True
                self._log(f"{child.spec.name} (pid {child.pid}) finished (exit code 0); not restarted")
                continue
            self._crashed(child, describe_exit(code), now)

    def _ended(self, child: _Child) -> tuple[bool, int | None]:
        """(exited, exit code): negative for a signal, None when this process could not reap it."""
        try:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:  # adopted, or reaped elsewhere in this process: only liveness is known
            return not self._same_process_alive(child), None
        if pid != child.pid:
            return False, None
        code = os.waitstatus_to_exitcode(status)
        if child.proc is not None:
            child.proc.returncode = code  # so the Popen never waits for a pid that is gone
        return True, code

    @staticmethod
    def _same_process_alive(child: _Child) -> bool:
        try:
            proc = psutil.Process(child.pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            return child.started_at is None or proc.create_time() == child.started_at
        except psutil.NoSuchProcess:
            return False

    def _crashed(self, child: _Child, what: str, now: float) -> None:
        s = self.settings
        name, log = child.spec.name, self.settings.run_dir / f"{child.spec.name}.log"
        child.crashes.append(now)
        while child.crashes and now - child.crashes[0] > s.supervisor_crash_window_s:
            child.crashes.popleft()
        n = len(child.crashes)
        if n >= s.supervisor_crash_limit:
            message = (
                f"{name} crashed {n} times within {s.supervisor_crash_window_s:g} s (last: pid {child.pid} {what}): "
                f"a crash loop, so reelstream stops everything; see {log}"
            )
            self._log(message, echo=False)  # the caller prints it, once, as it stops everything
            raise CrashLoop(message)
        delay = backoff_s(s, n)
        child.restart_at = now + delay
        self._log(
            f"{name} (pid {child.pid}) {what}; restarting in {delay:.1f} s "
            f"(crash {n} of {s.supervisor_crash_limit} within {s.supervisor_crash_window_s:g} s stops everything); "
            f"log: {log}"
        )

    def _restart(self, child: _Child) -> None:
        child.restart_at = None
        try:
            handle = child.spec.start()
        except (ReelstreamError, OSError) as exc:  # e.g. the broker did not come back: a crash of its own
            self._crashed(child, f"could not be restarted ({exc})", self.clock())
            return
        self._track(child.spec, handle)
        self._log(f"{child.spec.name} restarted (pid {self.children[child.spec.name].pid})")

    def _log(self, message: str, echo: bool = True) -> None:
        """One line on the console and in ``supervisor.log``."""
        if echo:
            self.echo(f"[yellow]supervisor:[/] {escape(message)}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self.log_path.open("a") as fh:
            fh.write(f"{stamp} {message}\n")


# --- the supervisor's pid file --------------------------------------------------------------


def _pidfile(settings: Settings) -> Path:
    return settings.run_dir / f"{PID_NAME}.pid"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # our own child (a detached supervisor): reap it if it exited
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def supervisor_pid(settings: Settings) -> int | None:
    """The pid of the live supervisor of this var folder, if any (a stale pid file is removed)."""
    path = _pidfile(settings)
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or _alive(pid):
        return pid
    path.unlink(missing_ok=True)
    return None


def claim(settings: Settings) -> int | None:
    """Record this process as the supervisor; returns the pid of another live one instead, if any."""
    other = supervisor_pid(settings)
    if other is not None and other != os.getpid():
        return other
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    _pidfile(settings).write_text(f"{os.getpid()}\n")
    return None


def release(settings: Settings) -> None:
    """Remove the pid file if it names this process."""
    if supervisor_pid(settings) == os.getpid():
        _pidfile(settings).unlink(missing_ok=True)


def stop_supervisor(settings: Settings, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """Make another process's supervisor exit without restarting anything (SIGUSR1); returns its pid.

    A supervisor that does not exit within ``timeout_s`` is killed: ``down`` must be able to stop
    the children without their being restarted behind its back.
    """
    pid = supervisor_pid(settings)
    if pid is None or pid == os.getpid():
        return None
    for sig in (signal.SIGUSR1, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling a process this one did not start: there is nothing to wait on
        if not _alive(pid):
            break
    else:
        raise InfraError(f"the supervisor (pid {pid}) did not exit, even after SIGKILL")
    _pidfile(settings).unlink(missing_ok=True)
    return pid
