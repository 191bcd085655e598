"""Noticing that a broker went away: the one signal a restarted memory-only broker gives every client.

A restarted Tansu (memory-only) holds a new, empty log under the old topic names, and nothing in the
protocol aiokafka 0.14 speaks tells the two apart (no topic ids below Metadata v10). What every client
does see is its connection to the broker breaking. :class:`BrokerWatch` counts those breaks for one
aiokafka client, and the consumer (``streams/consumer.py``: re-verify every fence) and the producers
(:mod:`streams.resend`: send again what the lost log may not have delivered) act on them.

aiokafka has no public hook for it: the client's connection-closed callback is wrapped (aiokafka is pinned
at 0.14.0 in ``pyproject.toml``; ``tests/test_stream_faults.py`` restarts a real broker under both).

**No client creates a topic.** aiokafka asks for every Metadata request to auto-create the topics it
names, with no setting to stop it; Tansu (and a Kafka with ``auto.create.topics.enable``) then creates
them with *its* partition count (4 on Tansu), so a producer that reaches a restarted broker before
``reelstream up`` has created the topics again moves users to other partitions, and the worker's fences
and one-writer-per-user rule with them. Importing this module makes aiokafka's Metadata requests ask for
no creation; the topics come from ``streams.admin.ensure_topics`` only (``settings.topic_partitions``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka.conn import CloseReason
from aiokafka.protocol import metadata as _metadata

__all__ = ["BROKEN", "BrokerWatch"]


def _no_auto_create(init: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: Any, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None) -> None:
        init(self, topics, False if allow_auto_topic_creation is None else allow_auto_topic_creation)

    __init__.reelstream_no_auto_create = True  # type: ignore[attr-defined]
    return __init__


if not getattr(_metadata.MetadataRequest.__init__, "reelstream_no_auto_create", False):
    _metadata.MetadataRequest.__init__ = _no_auto_create(_metadata.MetadataRequest.__init__)  # type: ignore[method-assign]

#: Why aiokafka closed a connection, when it means the broker went away (a restart may bring another log).
BROKEN = frozenset({CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT, CloseReason.OUT_OF_SYNC})


class BrokerWatch:
    """Counts the broken connections of one aiokafka client (a consumer's or a producer's ``_client``).

    Install it before the client connects. ``on_break`` callbacks run synchronously inside aiokafka's
    close callback, so they see the client as it was when the broker went away (no new connection yet).
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.breaks = 0  #: connections that broke since the watch was installed
        self.conns_at_break: list[Any] = []  #: the client's connections when the last one broke
        self.on_break: list[Callable[[], None]] = []
        original = client._on_connection_closed

        def on_closed(conn: Any, reason: Any) -> None:
            if reason in BROKEN:
                self.breaks += 1
                self.conns_at_break = list(client._conns.values())
                for callback in self.on_break:
                    callback()
            original(conn, reason)

        client._on_connection_closed = on_closed

    def connected_since_break(self) -> bool:
        """A connection exists that did not when the last one broke: what it returns may be from a new log."""
        old = self.conns_at_break
        return any(all(c is not o for o in old) for c in self.client._conns.values())
