"""The Faust app: one per worker process, configured from :class:`~reelstream.settings.Settings`.

Dataflow (read top to bottom across the modules)::

    streams/app.py       this App: Faust's producer (dead letters), web server (/metrics, /online), timers
    streams/consumer.py  BatchConsumer, a Faust service: aiokafka consumer, group = settings.app_id,
                         getmany -> a batch per topic
    streams/apply.py    apply_batch: batch -> processor -> Redis (one fenced Lua script); heartbeat timer
    streams/topics.py    the dead-letter topic (ratings and movies are consumed raw)

**Faust's own consumer is not started** (``_BootStrategy`` below:
``enable_kafka_consumer = False``, which also leaves out its conductor and
table manager; the app has no tables). The ratings and movies topics are read by
:class:`streams.consumer.BatchConsumer`, a service of this app, in batches of
whatever aiokafka has buffered. Measured on the 2-core development machine
(``bench/results/stream.json``, ``docs/infra.md``): a Faust agent with
``take_events`` spends about half the worker in Faust's per-message dispatch
(two tasks and an ``asyncio.wait`` per message, an Event per message) and
stopped at ~3.5-4k events/s with half a core idle; Faust also hard-codes
aiokafka's fetch wait (1,500 ms), which on Tansu puts p99 freshness near a
second. The batch consumer keeps the same semantics: at-least-once delivery
(Kafka offsets committed only after the Redis script that applied them),
exactly-once effect (the offset fence in that script), one consumer group
(``settings.app_id``) shared by all worker processes.

Local-broker notes (docs/infra.md): topics are created before the worker starts
(``ensure_topics``), each worker has its own web port, and the session timeout
is short so a new group joins in seconds.
"""

from __future__ import annotations

import os
import socket

import faust
from faust.app import BootStrategy

from reelstream.settings import get_settings
from streams.faust_codec import register_codecs

__all__ = ["app", "settings", "worker_name"]

settings = get_settings()
register_codecs()
worker_name = settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"


class _BootStrategy(BootStrategy):
    """Faust's producer, web server, services and timers, without its Kafka consumer (see the module docstring)."""

    enable_kafka_consumer = False


class App(faust.App):
    """faust.App whose topics are consumed by :class:`streams.consumer.BatchConsumer`, not by Faust."""

    BootStrategy = _BootStrategy


app = App(
    settings.app_id,
    broker=f"kafka://{settings.kafka_bootstrap}",
    store="memory://",
    autodiscover=False,
    datadir=str(settings.run_dir / "faust" / worker_name),
    web_port=settings.worker_web_port,
    web_bind=settings.worker_web_bind,
    web_host="127.0.0.1",
    broker_session_timeout=settings.broker_session_timeout,
    broker_heartbeat_interval=settings.broker_heartbeat_interval,
    # Faust's own committer has nothing to commit (its consumer is off); BatchConsumer commits every
    # stream_commit_interval_s: one setting for both
    broker_commit_interval=settings.stream_commit_interval_s,
    consumer_auto_offset_reset="earliest",
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication,
    topic_allow_declare=False,
    topic_disable_leader=True,
    producer_acks=-1,
)
