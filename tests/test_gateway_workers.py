"""``reelstream gateway --workers 2``: two processes on one port serve, and a SIGTERM stops them cleanly.

A gateway process once sometimes never finished its application shutdown ("Waiting for application
shutdown" and no more, 1 stop in 2 to 1 in 5 here): the freshness probe's task lost its cancellation to
Python 3.11's ``wait_for`` and polled on. The probe now uses ``asyncio.timeout``, and the lifespan's
shutdown is bounded and names what overran (gateway/shutdown.py); the supervisor
(``reelstream/shell/gateway_processes.py``) still kills a process that outlives the graceful period.
"""

from __future__ import annotations

import signal

import httpx
import psutil

from reelstream.shell.commands.gateway import GRACEFUL_SHUTDOWN_S
from reelstream.shell.gateway_processes import STOP_MARGIN_S
from tests.live_system import GatewayProcess, Live
from tests.stream_support import wait_for


def test_two_gateway_processes_serve(live: Live) -> None:
    gateway = GatewayProcess(live.env, live.log_dir, "--workers", "2")
    workers: list[psutil.Process] = []
    try:
        gateway.wait_ready(timeout=120)
        wait_for(lambda: len(gateway.worker_processes()) == 2, 60, "two gateway worker processes")
        workers = gateway.worker_processes()
        with httpx.Client(base_url=gateway.url, timeout=10, headers={"Connection": "close"}) as client:
            for uid in range(1, 41):  # a new connection each: either process may accept it
                resp = client.get(f"/recommendations/{uid}", params={"k": 5})
                assert resp.status_code == 200, resp.text
                assert len(resp.json()["items"]) == 5
        assert all(w.is_running() for w in workers), gateway.tail()
        gateway.proc.send_signal(signal.SIGTERM)
        rc = gateway.proc.wait(timeout=GRACEFUL_SHUTDOWN_S + STOP_MARGIN_S + 30)  # TimeoutExpired: it hung
        assert rc == 0, gateway.tail()  # 1: a process had to be killed, and the log says which
        assert "did not finish within" not in gateway.log.read_text(errors="replace"), gateway.tail()  # no step overran
        wait_for(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers), 10,
                 "no gateway process left")  # fmt: skip
    finally:
        gateway.stop()
        for worker in workers:  # a worker the supervisor left behind
            if worker.is_running():
                worker.kill()
