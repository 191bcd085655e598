"""The local 3-master Redis Cluster fixture (tests/redis_cluster.py) is a real cluster: keys spread over the
masters, a multi-key command across slots is refused, and keys with one hash tag share a slot. That last
property is what the planned cluster port builds on (docs/redis-keys.md, "Redis Cluster").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from tests.redis_cluster import SLOTS, LocalCluster, start_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = start_cluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    yield c
    c.stop()


def test_the_masters_share_every_slot_and_each_holds_keys(cluster: LocalCluster) -> None:
    client = cluster.client()
    try:
        for port in cluster.ports:
            info = cluster.info(port)
            assert info["cluster_slots_assigned"] == str(SLOTS) and info["cluster_size"] == "3", info
        for i in range(300):
            client.set(f"fixture:key:{i}", i)
        held = [cluster.node(port).dbsize() for port in cluster.ports]
        assert sum(held) == 300 and all(n > 0 for n in held), held
        assert int(client.get("fixture:key:123")) == 123
    finally:
        client.close()


def test_a_cross_slot_command_is_refused_and_one_hash_tag_is_one_slot(cluster: LocalCluster) -> None:
    node = cluster.node(cluster.ports[0])
    a, b = "fixture:user:1", "fixture:user:2"
    assert node.cluster("keyslot", a) != node.cluster("keyslot", b)
    owner = cluster.client()
    try:
        tagged = ["rs:user:{1}", "rs:user:{1}:rated", "rs:user:{1}:recent"]
        assert len({owner.keyslot(k) for k in tagged}) == 1
        # one slot: a script may touch all three atomically
        assert owner.eval("redis.call('SET', KEYS[1], 'a'); redis.call('SET', KEYS[2], 'b'); return 1", 2,
                          tagged[0], tagged[1]) == 1  # fmt: skip
        with pytest.raises(ResponseError, match="don't hash to the same slot"):  # the server's CROSSSLOT
            node.eval("return redis.call('MSET', KEYS[1], 'x', KEYS[2], 'y')", 2, a, b)
    finally:
        owner.close()
