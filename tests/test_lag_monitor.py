"""Lag figures and verdicts against a real broker, with a group whose offsets the test controls."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata
from rich.console import Console

from monitoring.lag import GroupLag, LagMonitor, PartitionLag, _commit_time, commit_metadata
from reelstream.shell.commands.lag import render
from tests.conftest import LiveInfra

PER_PARTITION = [40, 25]


async def _topic_with_records(bootstrap: str) -> str:
    """A fresh 2-partition topic holding PER_PARTITION records, produced in batches (Tansu defect 1)."""
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, f"{p}-{i}".encode(), partition=p)
            for p, n in enumerate(PER_PARTITION)
            for i in range(n)
        ]
        for f in futures:
            await f
    finally:
        await producer.stop()
    return topic


async def _commit(bootstrap: str, group: str, topic: str, offsets: list[int], metadata: str) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(len(offsets))]
        consumer.assign(tps)
        await consumer.commit({tp: OffsetAndMetadata(o, metadata) for tp, o in zip(tps, offsets, strict=True)})
    finally:
        await consumer.stop()


async def test_commit_times_in_metadata_mark_a_committing_group() -> None:
    assert _commit_time(commit_metadata(1234)) == 1234
    assert _commit_time("") is None and _commit_time("reelstream-commit-ms=x") is None


async def test_lag_is_produced_minus_committed_per_partition(live_infra: LiveInfra) -> None:
    topic = await _topic_with_records(live_infra.kafka_bootstrap)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumed = [15, 25]
    await _commit(live_infra.kafka_bootstrap, group, topic, consumed, commit_metadata())
    async with LagMonitor(live_infra.kafka_bootstrap, group, [topic]) as monitor:
        result = await monitor.sample()
    rows = {r.partition: r for r in result.partitions}
    for p, (n, m) in enumerate(zip(PER_PARTITION, consumed, strict=True)):
        assert rows[p].end == n, "log end must come from the fetch high watermark, not ListOffsets"
        assert rows[p].committed == m
        assert rows[p].lag == n - m
    assert result.total_lag == sum(PER_PARTITION) - sum(consumed)
    assert rows[0].lag_seconds > 0 and rows[1].lag_seconds == 0


async def test_uncommitted_group_lags_by_everything(live_infra: LiveInfra) -> None:
    topic = await _topic_with_records(live_infra.kafka_bootstrap)
    async with LagMonitor(live_infra.kafka_bootstrap, f"never-{uuid.uuid4().hex[:6]}", [topic]) as monitor:
        result = await monitor.sample()
    assert [r.lag for r in result.partitions] == PER_PARTITION


async def test_stalled_and_stopped_consumers(live_infra: LiveInfra) -> None:
    bootstrap = live_infra.kafka_bootstrap
    topic = await _topic_with_records(bootstrap)
    stalled, stopped = f"stalled-{uuid.uuid4().hex[:6]}", f"stopped-{uuid.uuid4().hex[:6]}"
    await _commit(bootstrap, stopped, topic, [5, 5], commit_metadata(1_000))

    # Tansu drops offset metadata, so liveness comes from the consumers' heartbeats, as the
    # reelstream workers' Redis heartbeats give it for the real group.
    async def alive() -> bool:
        return True

    async def dead() -> bool:
        return False

    async with (
        LagMonitor(bootstrap, stalled, [topic], window=3, liveness=alive) as stalled_monitor,
        LagMonitor(bootstrap, stopped, [topic], window=3, liveness=dead) as stopped_monitor,
    ):
        for step in range(3):
            # The stalled consumer keeps committing the same offsets; the stopped one committed once.
            await _commit(bootstrap, stalled, topic, [5, 5], commit_metadata(2_000 + step))
            stalled_result = await stalled_monitor.sample(now=100.0 + step)
            stopped_result = await stopped_monitor.sample(now=100.0 + step)
    assert stalled_result.verdict == "STALL"
    assert {r.verdict for r in stalled_result.partitions} == {"STALL"}
    assert stopped_result.verdict == "STOP"


async def test_rewind_and_progress(live_infra: LiveInfra) -> None:
    bootstrap = live_infra.kafka_bootstrap
    topic = await _topic_with_records(bootstrap)
    group = f"rw-{uuid.uuid4().hex[:6]}"
    async with LagMonitor(bootstrap, group, [topic], window=3) as monitor:
        await _commit(bootstrap, group, topic, [10, 10], commit_metadata(1))
        first = await monitor.sample(now=1.0)
        await _commit(bootstrap, group, topic, [20, 20], commit_metadata(2))
        progressing = await monitor.sample(now=2.0)
        await _commit(bootstrap, group, topic, [3, 20], commit_metadata(3))
        rewound = await monitor.sample(now=3.0)
    assert progressing.verdict == "OK"
    assert first.partitions[0].rate is None  # one sample: no rate yet (shown as "—", JSON null)
    assert progressing.partitions[0].rate == 10.0
    assert rewound.partitions[0].verdict == "REWIND" and rewound.verdict == "REWIND"


def test_a_rate_from_one_sample_is_shown_as_unknown() -> None:
    def shown(samples: int) -> str:
        row = PartitionLag("ratings", 0, 10, 20, 10, 1.0, None if samples == 1 else 0.0, "OK", samples=samples)
        console = Console(width=200, record=True)
        console.print(render(GroupLag("g", 0.0, "OK", 10, [row])))
        return console.export_text()

    assert "—" in shown(1)
    assert "—" not in shown(2) and " 0.0 " in shown(2)
