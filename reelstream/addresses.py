"""Addresses and the broker probe: the small kernel the library packages share with the shell.

``streams``, ``gateway`` and ``monitoring`` check that a broker answers and parse the configured
addresses; the shell (:mod:`reelstream.shell.local_services`, which starts the local broker and Redis) does the same.
They live here, beside the settings, so that no library package imports the shell.
"""

from __future__ import annotations

import socket
import struct
from urllib.parse import urlparse

from reelstream.errors import InfraError

__all__ = ["broker_answers", "gateway_url", "kafka_address", "redis_address"]


def gateway_url(host: str, port: int) -> str:
    """Where a client on this machine reaches the gateway bound to ``host:port`` (a wildcard bind: on loopback).

    >>> gateway_url("0.0.0.0", 8000), gateway_url("127.0.0.1", 8001)
    ('http://127.0.0.1:8000', 'http://127.0.0.1:8001')
    """
    return f"http://{'127.0.0.1' if host in {'0.0.0.0', '::'} else host}:{port}"


def kafka_address(bootstrap: str) -> tuple[str, int]:
    """The first ``host:port`` of a bootstrap list."""
    first = bootstrap.split(",")[0].strip()
    if "://" in first:
        first = first.split("://", 1)[1]
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise InfraError(f"KAFKA_BOOTSTRAP {bootstrap!r} is not host:port")
    return host, int(port)


def redis_address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss"} or not parsed.hostname:
        raise InfraError(f"REDIS_URL {url!r} is not redis://host:port/db")
    return parsed.hostname, parsed.port or 6379


def broker_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    """True when a Kafka-protocol broker answers an ApiVersions request at ``bootstrap``."""
    host, port = kafka_address(bootstrap)
    client_id = b"reelstream-probe"
    # ApiVersions v0: api_key=18, api_version=0, correlation_id, client_id.
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = _recv_exact(sock, 8)
    except OSError:
        return False
    if header is None:
        return False
    _size, correlation_id = struct.unpack(">ii", header)
    return correlation_id == 7


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
