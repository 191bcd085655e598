"""docker-compose.scale.yml, merged over docker-compose.kafka.yml by compose's documented rules (no Docker
needed): three brokers in one quorum, replication that survives a broker, every client given every broker,
loopback-only ports, and Prometheus scraping every replica.

The merge follows the Compose Specification's merge section: mappings merge key by key, sequences append,
``command``/``entrypoint``/``healthcheck.test`` are replaced, and ``!override``/``!reset`` replace or drop a
value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from reelstream.settings import PROJECT_ROOT, Settings
from tests.test_compose import _settings_env_names, interpolate

BASE = PROJECT_ROOT / "docker-compose.kafka.yml"
SCALE = PROJECT_ROOT / "docker-compose.scale.yml"
CLIENTS = ("init", "worker", "archive", "gateway")
_REPLACED = {"command", "entrypoint", "test"}


@dataclass
class _Override:
    value: Any


class _Reset:
    pass


class _ComposeLoader(yaml.SafeLoader):
    """YAML with compose's ``!override`` and ``!reset`` tags."""


def _override(loader: yaml.SafeLoader, node: yaml.Node) -> _Override:
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    return _Override(loader.construct_scalar(node))  # type: ignore[arg-type]


_ComposeLoader.add_constructor("!override", _override)
_ComposeLoader.add_constructor("!reset", lambda loader, node: _Reset())


def merge(base: Any, over: Any, key: str = "") -> Any:
    """``over`` merged onto ``base`` as compose merges two files."""
    if isinstance(over, _Override):
        return over.value
    if isinstance(over, _Reset):
        return None
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            merged = merge(base[k], v, k) if k in base else merge(None, v, k)
            if merged is None and isinstance(v, _Reset):
                out.pop(k, None)
            else:
                out[k] = merged
        return out
    if isinstance(base, list) and isinstance(over, list) and key not in _REPLACED:
        return base + [v for v in over if v not in base]
    return over


def _merged() -> dict[str, Any]:
    base = yaml.load(BASE.read_text(), Loader=_ComposeLoader)
    over = yaml.load(SCALE.read_text(), Loader=_ComposeLoader)
    return merge(base, over)


def _brokers(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if str(s.get("image", "")).startswith("apache/kafka")}


def test_the_override_file_parses_and_adds_two_brokers() -> None:
    services = _merged()["services"]
    assert set(_brokers(services)) == {"kafka", "kafka-2", "kafka-3"}
    assert {"redis", "init", "worker", "archive", "gateway", "prometheus", "grafana"} <= set(services)


def test_the_brokers_form_one_quorum_with_distinct_ids() -> None:
    brokers = _brokers(_merged()["services"])
    voters = {f"{b['environment']['KAFKA_NODE_ID']}@{b.get('hostname', name)}:9093" for name, b in brokers.items()}
    assert len(voters) == len(brokers) == 3  # distinct node ids
    for name, broker in brokers.items():
        env = broker["environment"]
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters, name
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{broker.get('hostname', name)}:9092", name
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller", name
        assert "healthcheck" in broker, name


def test_replication_survives_one_broker_and_agrees_everywhere() -> None:
    services = _merged()["services"]
    brokers = _brokers(services)
    factors = {"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
               "KAFKA_DEFAULT_REPLICATION_FACTOR"}  # fmt: skip
    for name, broker in brokers.items():
        env = broker["environment"]
        assert {int(env[f]) for f in factors} == {len(brokers)}, name
        # acks=all with one broker down still succeeds: fewer replicas must be in sync than exist
        assert 1 < int(env["KAFKA_MIN_INSYNC_REPLICAS"]) < len(brokers), name
        assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == int(env["KAFKA_MIN_INSYNC_REPLICAS"]), name
    for name in CLIENTS:
        assert int(services[name]["environment"]["REELSTREAM_TOPIC_REPLICATION"]) == len(brokers), name


def test_every_client_is_given_every_broker() -> None:
    services = _merged()["services"]
    brokers = {f"{b.get('hostname', name)}:9092" for name, b in _brokers(services).items()}
    known = _settings_env_names()
    for name in CLIENTS:
        env = services[name]["environment"]
        assert not {k for k in env if k not in known}, f"{name} sets variables Settings does not read"
        bootstrap = Settings(kafka_bootstrap=env["KAFKA_BOOTSTRAP"]).kafka_bootstrap
        assert set(bootstrap.split(",")) == brokers, name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name  # one Redis: not a cluster yet
    depends = services["init"]["depends_on"]
    assert all(depends[b]["condition"] == "service_healthy" for b in _brokers(services))


def _ports(service: dict[str, Any], env: dict[str, str]) -> list[tuple[str, str, int]]:
    out = []
    for spec in service.get("ports", []):
        host, published, target = interpolate(spec, env).split(":")
        out.append((host, published, int(target)))
    return out


def test_gateway_replicas_each_get_a_loopback_port_and_brokers_publish_none() -> None:
    services = _merged()["services"]
    (host, published, target), *more = _ports(services["gateway"], {})
    assert not more, "the base file's single port must be replaced, or two replicas would both bind it"
    first, last = (int(p) for p in published.split("-"))
    assert host == "127.0.0.1" and last - first + 1 >= 2
    assert first == Settings().gateway_port
    assert target == int(services["gateway"]["environment"]["REELSTREAM_GATEWAY_PORT"])
    assert _ports(services["gateway"], {"REELSTREAM_GATEWAY_PUBLISH_HOST": "0.0.0.0"})[0][0] == "0.0.0.0"
    for name in ("kafka-2", "kafka-3"):
        assert not services[name].get("ports"), f"{name} is reached inside the compose network only"
    for name, service in services.items():
        assert {h for h, _, _ in _ports(service, {})} <= {"127.0.0.1"}, name


def test_prometheus_scrapes_every_replica_of_the_gateway_and_worker() -> None:
    services = _merged()["services"]
    (mount,) = services["prometheus"]["volumes"]
    source = mount.split(":")[0]
    config = yaml.safe_load((PROJECT_ROOT / source).read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"] for job in config["scrape_configs"]}
    ports = {"gateway": int(services["gateway"]["environment"]["REELSTREAM_GATEWAY_PORT"]),
             "worker": int(services["worker"]["environment"]["REELSTREAM_WORKER_WEB_PORT"])}  # fmt: skip
    for service, port in ports.items():
        (sd,) = jobs[f"reelstream-{service}"]
        assert sd["names"] == [service] and sd["type"] == "A" and sd["port"] == port


def test_merge_follows_the_documented_rules() -> None:
    """The oracle for the merge itself: the Compose Specification's own examples."""
    assert merge({"foo": {"key1": "value1", "key2": "value2"}}, {"foo": {"key2": "VALUE", "key3": "value3"}}) == {
        "foo": {"key1": "value1", "key2": "VALUE", "key3": "value3"}
    }
    assert merge({"dns": ["1.1.1.1"]}, {"dns": ["8.8.8.8"]}) == {"dns": ["1.1.1.1", "8.8.8.8"]}
    assert merge({"command": ["echo", "foo"]}, {"command": ["echo", "bar"]}) == {"command": ["echo", "bar"]}
    assert merge({"ports": ["8080:80"]}, {"ports": _Override(["18080:80"])}) == {"ports": ["18080:80"]}
    assert merge({"ports": ["8080:80"], "image": "x"}, {"ports": _Reset()}) == {"image": "x"}
