"""The Faust app: one per worker process, configured from :class:`~reelstream.settings.Settings`.

Dataflow (read top to bottom across the modules)::

    streams/app.py      this App (consumer group = settings.app_id)
    streams/topics.py   ratings (keyed by user), movies (keyed by movie), dead letters
    streams/records.py  the typed Faust Records, each naming its Avro codec
    streams/agents.py   apply_ratings, apply_movies: batch -> processor -> Redis; heartbeat timer

Local-broker notes (INFRA.md): topics are created before the worker starts
(``ensure_topics``), the leader topic is disabled, each worker has its own web
port, the session timeout is short so a new group joins in seconds, and
aiokafka's fetch wait, which Faust hard-codes to 1,500 ms, is set from
``settings.stream_fetch_max_wait_ms`` through the small transport subclass below.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from reelstream.settings import get_settings
from streams.codecs import register_codecs

__all__ = ["app", "settings", "worker_name"]

settings = get_settings()
register_codecs()
worker_name = settings.worker_name or f"{socket.gethostname()}-{os.getpid()}"


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = settings.stream_fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App whose Kafka transport honours ``settings.stream_fetch_max_wait_ms``."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


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
    broker_commit_interval=1.0,
    consumer_auto_offset_reset="earliest",
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication,
    topic_allow_declare=False,
    topic_disable_leader=True,
    producer_acks=-1,
)
