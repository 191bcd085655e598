"""``reelstream gateway --workers N``: uvicorn's process supervisor with a bounded stop.

Why not ``uvicorn.run(..., workers=N)`` as is: its supervisor stops by sending SIGTERM to every process and
then joining each without a timeout, so one process that does not exit (seen intermittently here: a
worker still in start-up, or one whose shutdown waits on a stuck connection) holds the supervisor, and
``reelstream down``, the compose stop or a test, forever. Here each process gets the graceful period
(``timeout_graceful_shutdown``) plus :data:`STOP_MARGIN_S`; one still running then is killed, and the
supervisor says which and exits 1.
"""

from __future__ import annotations

import logging
import socket
import time

from uvicorn import Config
from uvicorn.supervisors.multiprocess import Multiprocess

__all__ = ["BoundedMultiprocess", "serve_processes"]

log = logging.getLogger("uvicorn.error")

#: Seconds past the graceful shutdown period a gateway process gets before it is killed.
STOP_MARGIN_S = 5.0


class BoundedMultiprocess(Multiprocess):
    """uvicorn's :class:`Multiprocess`, whose stop ends in bounded time (see the module docstring)."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.killed: list[int] = []  #: the pids killed on the way out

    def join_all(self) -> None:
        deadline = time.monotonic() + (self.config.timeout_graceful_shutdown or 0) + STOP_MARGIN_S
        for process in self.processes:
            process.process.join(max(0.0, deadline - time.monotonic()))
            if process.process.is_alive():
                log.error("gateway process [%s] did not stop in time: killed", process.pid)
                process.kill()
                process.process.join()
                self.killed.append(process.pid or 0)


def serve_processes(config: Config) -> None:
    """Bind ``config``'s socket once and run ``config.workers`` processes on it until SIGINT/SIGTERM.

    SystemExit(1) when a process had to be killed on the way out.
    """
    sock = config.bind_socket()
    supervisor = BoundedMultiprocess(config, sockets=[sock])
    try:
        supervisor.run()
    finally:
        sock.close()
    if supervisor.killed:
        raise SystemExit(1)
