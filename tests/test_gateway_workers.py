"""``reelstream gateway --workers 2``: two processes on one port serve.

A clean stop is not asserted: the uvicorn supervisor's SIGTERM sometimes waits on one worker that does not
exit (seen intermittently, here and in CI); that defect is open (issue 13), and ``GatewayProcess.stop`` kills
what is left after its timeout.
"""

from __future__ import annotations

import httpx
import psutil

from tests.live_system import GatewayProcess, Live
from tests.stream_support import wait_for


def _python_children(pid: int) -> list[psutil.Process]:
    """The gateway's worker processes (uvicorn's supervisor also starts a resource tracker)."""
    children = psutil.Process(pid).children(recursive=True)
    return [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]


def test_two_gateway_processes_serve(live: Live) -> None:
    gateway = GatewayProcess(live.env, live.log_dir, "--workers", "2")
    workers: list[psutil.Process] = []
    try:
        gateway.wait_ready(timeout=120)
        wait_for(lambda: len(_python_children(gateway.proc.pid)) == 2, 60, "two gateway worker processes")
        workers = _python_children(gateway.proc.pid)
        with httpx.Client(base_url=gateway.url, timeout=10, headers={"Connection": "close"}) as client:
            for uid in range(1, 41):  # a new connection each: either process may accept it
                resp = client.get(f"/recommendations/{uid}", params={"k": 5})
                assert resp.status_code == 200, resp.text
                assert len(resp.json()["items"]) == 5
        assert all(w.is_running() for w in workers), gateway.tail()
    finally:
        gateway.stop()
        for worker in workers:  # a worker the supervisor left behind
            if worker.is_running():
                worker.kill()
