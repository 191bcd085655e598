"""``reelstream up`` / ``reelstream down``: the whole live system in one command, supervised.

``up`` stays in the foreground and supervises (reelstream/shell/supervisor.py): a crashed child is restarted,
a crash loop stops everything with a message, Ctrl-C or SIGTERM stops everything. ``up --detach`` runs
the same supervising ``up`` in the background (its own session, output in ``var/run/up.log``), relays
its output until the system is up, and returns. ``down`` (any shell) makes the supervisor let go, then
stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer
from rich.markup import escape

from reelstream.addresses import gateway_url
from reelstream.console import console
from reelstream.settings import Settings, get_settings
from reelstream.shell import live_system, supervisor

#: The last line a background ``up`` prints once everything runs; ``up --detach`` relays output until it.
BACKGROUND_MARKER = "Supervising in the background"


def _echo(message: str) -> None:
    """One line, never wrapped: paths and the token stay whole in logs (and for whoever greps them)."""
    console.print(message, soft_wrap=True)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (and ``down``'s SIGUSR1) during start-up stop the system like Ctrl-C does."""
    raise KeyboardInterrupt


#: ``--data`` of ``up`` and ``prepare``: a MovieLens-format folder (ML-100K/1M/25M/32M, latest-small, ``synth``).
DATA_OPTION = typer.Option(
    None, exists=True, file_okay=False, dir_okay=True, resolve_path=True,
    help="MovieLens-format folder to serve (default: the current store's dataset, else the bundled one); "
    "bootstrapped only when the store was built from another folder or its files changed.",
)  # fmt: skip


def up(
    workers: int = typer.Option(1, min=1, max=8, help="Worker processes in the consumer group."),
    gateways: int = typer.Option(1, min=1, max=16, help="Gateway processes sharing the gateway port."),
    rate: float = typer.Option(
        200.0, min=0.0, help="Replay speed in events per second; 0: as fast as the system takes."
    ),
    data: Path | None = DATA_OPTION,
    replay: bool = typer.Option(True, "--replay/--no-replay", help="Replay the STREAM split into Kafka."),
    serve_rate: float = typer.Option(
        0.1, min=0.0, max=1.0, help="Fraction of users whose list the replay requests before each of their events."
    ),
    detach: bool = typer.Option(False, "--detach", help="Supervise in the background; return once everything runs."),
    retrain_every_hours: float | None = typer.Option(
        None, min=0.001, help="Run `reelstream retrain` on this schedule (default: never)."
    ),
    background: bool = typer.Option(False, "--background", hidden=True, help="Set by --detach for its child."),
) -> None:
    """Start broker, Redis, worker(s), archive, gateway and replay under a supervisor that restarts what crashes."""
    settings = get_settings()
    plan = live_system.SystemPlan(
        workers=workers, gateways=gateways, replay=replay, replay_rate=rate, serve_rate=serve_rate,
        retrain_every_hours=retrain_every_hours, data=data,
    )  # fmt: skip
    if detach:
        code = _detach(settings, plan)
    else:
        other = supervisor.claim(settings)
        if other is not None:
            code = _alongside(settings, plan, other)
        else:
            try:
                code = _supervised(settings, plan, background)
            finally:
                supervisor.release(settings)
    if code:
        raise typer.Exit(code)


def _summary(settings: Settings, lines: list[str]) -> None:
    for line in lines:
        _echo(f"  {escape(line)}")
    url = gateway_url(settings.gateway_host, settings.gateway_port)
    _echo(f"\n[bold green]reelstream is up.[/] Dashboard: {url}/   API docs: {url}/docs")
    _echo(f"Logs and pids: {settings.run_dir}   Lag: `reelstream lag --watch`")


def _stop_all(settings: Settings) -> None:
    for line in live_system.down(settings):
        _echo(f"  {escape(line)}")


def _supervised(settings: Settings, plan: live_system.SystemPlan, background: bool) -> int:
    """Start the system under a supervisor held by this process and supervise until told to stop."""
    sup = supervisor.Supervisor(settings, _echo)
    stop, let_go = threading.Event(), threading.Event()
    for signum in (signal.SIGTERM, signal.SIGUSR1):  # start-up: stop everything ourselves (``down`` waits)
        signal.signal(signum, _interrupt)
    try:
        _summary(settings, live_system.up(settings, plan, _echo, sup))
        log = settings.run_dir / supervisor.LOG_NAME
        if background:
            _echo(f"{BACKGROUND_MARKER} (pid {os.getpid()}; crashes in {log}). Stop it with `reelstream down`.")
        else:
            _echo(f"Supervising: a crashed process is restarted ({log}). Ctrl-C stops everything.")

        def on_stop(signum: int, frame: object) -> None:
            stop.set()

        def on_let_go(signum: int, frame: object) -> None:  # ``reelstream down`` stops the processes itself
            let_go.set()
            stop.set()

        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGUSR1, on_let_go)
        sup.run(stop)
    except supervisor.CrashLoop as exc:
        _echo(f"[bold red]{escape(str(exc))}[/]")
        _stop_all(settings)
        return 1
    except KeyboardInterrupt:
        console.print("\nstopping ...")
        _stop_all(settings)
        return 130
    if let_go.is_set():
        console.print("`reelstream down` took over; it stops everything")
        return 0
    console.print("\nstopping ...")
    _stop_all(settings)
    return 0


def _alongside(settings: Settings, plan: live_system.SystemPlan, other: int) -> int:
    """Another supervisor holds this var folder: report (starting only what is missing) and leave it in charge."""
    _summary(settings, live_system.up(settings, plan, _echo, supervisor.Supervisor(settings, _echo, passive=True)))
    _echo(f"Already supervised by pid {other}. Stop everything with `reelstream down`.")
    return 0


def _detach(settings: Settings, plan: live_system.SystemPlan) -> int:
    """Run the supervising ``up`` in its own session and relay its output until the system is up."""
    other = supervisor.supervisor_pid(settings)
    if other is not None:
        return _alongside(settings, plan, other)
    argv = [sys.executable, "-m", "reelstream.shell.cli", "up", "--background", "--workers", str(plan.workers),
            "--gateways", str(plan.gateways), "--rate", f"{plan.replay_rate:g}", "--serve-rate", f"{plan.serve_rate:g}",
            "--replay" if plan.replay else "--no-replay"]  # fmt: skip
    if plan.retrain_every_hours:
        argv += ["--retrain-every-hours", f"{plan.retrain_every_hours:g}"]
    if plan.data is not None:
        argv += ["--data", str(plan.data)]
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log = settings.run_dir / "up.log"
    with log.open("ab") as fh:
        offset = fh.tell()
        # The working folder stays this one, so the background ``up`` reads the same ``.env``.
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    try:
        return _relay(proc, log, offset)
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)  # it stops what it started
        proc.wait()
        return 130


def _relay(proc: subprocess.Popen[bytes], log: Path, offset: int) -> int:
    """Echo ``log`` from ``offset`` until the background ``up`` prints :data:`BACKGROUND_MARKER` or exits."""
    seen = ""
    with log.open("rb") as fh:
        fh.seek(offset)
        while True:
            exited = proc.poll() is not None
            chunk = fh.read().decode(errors="replace")
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
                seen = (seen + chunk)[-4096:]
            if BACKGROUND_MARKER in seen:
                return 0
            if exited:
                return proc.returncode
            time.sleep(0.1)  # following a file another process writes: nothing to wait on


def prepare(data: Path | None = DATA_OPTION) -> None:
    """Create topics, bootstrap, train and seed HISTORY where missing or stale (broker and Redis must answer)."""
    for line in live_system.prepare(get_settings(), console.print, data):
        console.print(f"  {line}")


def down() -> None:
    """Stop everything `reelstream up` started (supervisor, replay, gateway, archive, workers, broker, Redis)."""
    for line in live_system.down(get_settings()):
        console.print(line)
