"""Topic administration: the topics are defined once (names in settings) and created idempotently.

The ratings topic is keyed by user id, the movies topic by movie id, the
dead-letter topic by ``topic:partition:offset``. All get
``settings.topic_partitions`` partitions and ``settings.topic_replication``
replicas. Creation is idempotent: existing topics are left as they are (a
topic with fewer partitions than configured is reported, never altered: adding
partitions would move users to other partitions).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from reelstream.errors import InfraError
from reelstream.settings import Settings

__all__ = ["PROBE_POLL_MS", "TopicStatus", "ensure_topics", "ensure_topics_sync", "recreate_topics_sync",
           "started_admin"]  # fmt: skip

#: One fetch poll of a probe consumer inside a deadline loop: how often the loop looks at its deadline.
PROBE_POLL_MS = 200

#: Seconds between looks at the topic list while a deletion completes (Apache Kafka deletes asynchronously).
DELETE_POLL_S = 0.2


@dataclass(frozen=True)
class TopicStatus:
    name: str
    partitions: int
    created: bool

    @property
    def summary(self) -> str:
        verb = "created" if self.created else "exists"
        return f"topic   {self.name:<28} {self.partitions} partitions, {verb}"


async def started_admin(settings: Settings, timeout_s: float) -> AIOKafkaAdminClient:
    """A started admin client for the configured broker; InfraError (client closed) when it does not answer."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (KafkaError, OSError, TimeoutError) as exc:
        await admin.close()
        raise InfraError(f"broker at {settings.kafka_bootstrap} unreachable: {exc}") from None
    return admin


async def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[TopicStatus]:
    """Create every topic in ``settings.topics`` that does not exist yet."""
    admin = await started_admin(settings, timeout_s)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in settings.topics if t not in existing]
        if missing:
            new = [NewTopic(t, settings.topic_partitions, settings.topic_replication) for t in missing]
            # Another process may win the race: fine, that is what idempotent means.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        meta = await admin.describe_topics(list(settings.topics))
        counts = {m["topic"]: len(m.get("partitions", [])) for m in meta}
        return [TopicStatus(t, counts.get(t, 0), t in missing) for t in settings.topics]
    finally:
        await admin.close()


def ensure_topics_sync(settings: Settings) -> list[TopicStatus]:
    """:func:`ensure_topics` for synchronous callers (CLI, tests)."""
    return asyncio.run(ensure_topics(settings))


async def recreate_topics(settings: Settings, timeout_s: float = 60.0) -> list[TopicStatus]:
    """Delete every topic in ``settings.topics`` and create it again, empty: the log of a dataset no longer served.

    Kafka deletes asynchronously (a topic marked for deletion still exists and refuses creation), so this waits
    until the topics are gone from the listing before creating them again.
    """
    admin = await started_admin(settings, timeout_s)
    try:
        present = [t for t in settings.topics if t in set(await admin.list_topics())]
        if present:
            await admin.delete_topics(present)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while set(present) & set(await admin.list_topics()):
            if asyncio.get_running_loop().time() > deadline:
                raise InfraError(f"topics {present} still exist {timeout_s:.0f} s after their deletion")
            await asyncio.sleep(DELETE_POLL_S)  # the broker's deletion completes on its own schedule
    finally:
        await admin.close()
    return await ensure_topics(settings, timeout_s)


def recreate_topics_sync(settings: Settings) -> list[TopicStatus]:
    """:func:`recreate_topics` for synchronous callers."""
    return asyncio.run(recreate_topics(settings))


async def high_watermarks(settings: Settings, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """The log-end offset of every partition of ``topic``, from a fetch response.

    ``end_offsets()`` (ListOffsets) understates the end on Tansu (docs/infra.md, defect 1),
    so it is used only as a lower bound to seek to; the fetch response's high
    watermark is the answer.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None,
        fetch_max_wait_ms=50, max_partition_fetch_bytes=1024,
    )  # fmt: skip
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        lower = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, lower[tp])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(consumer.highwater(tp) is None for tp in tps):
            if loop.time() > deadline:
                raise InfraError(f"no fetch response for {topic} within {timeout_s:.0f} s")
            await consumer.getmany(timeout_ms=PROBE_POLL_MS, max_records=1)
        return {tp.partition: int(consumer.highwater(tp)) for tp in tps}
    finally:
        await consumer.stop()
