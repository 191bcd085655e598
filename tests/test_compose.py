"""docker-compose.kafka.yml stays in step with the settings module (no Docker needed to check)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices

from reelstream import infra
from reelstream.settings import PROJECT_ROOT, Settings

COMPOSE = PROJECT_ROOT / "docker-compose.kafka.yml"


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _settings_env_names() -> set[str]:
    """Every environment variable name Settings reads."""
    names: set[str] = set()
    prefix = Settings.model_config.get("env_prefix", "")
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def test_services_are_the_ones_the_system_needs() -> None:
    services = _compose()["services"]
    assert {"kafka", "redis", "worker", "gateway"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["redis"]["image"].startswith("redis:7")


def test_every_variable_is_a_setting_and_addresses_match_the_services() -> None:
    known = _settings_env_names()
    services = _compose()["services"]
    for name in ("worker", "gateway"):
        env = services[name]["environment"]
        unknown = {k for k in env if k not in known}
        assert not unknown, f"{name} sets variables Settings does not read: {unknown}"
        settings = Settings(**{"kafka_bootstrap": env["KAFKA_BOOTSTRAP"], "redis_url": env["REDIS_URL"]})
        host, port = infra.kafka_address(settings.kafka_bootstrap)
        assert host == "kafka" and port == 9092
        rhost, rport = infra.redis_address(settings.redis_url)
        assert rhost == "redis" and rport == 6379
        assert int(env["REELSTREAM_TOPIC_PARTITIONS"]) == Settings().topic_partitions


def test_published_ports_match_the_default_settings() -> None:
    services = _compose()["services"]
    defaults = Settings()
    _, kafka_port = infra.kafka_address(defaults.kafka_bootstrap)
    _, redis_port = infra.redis_address(defaults.redis_url)
    assert f"{kafka_port}:9092" in services["kafka"]["ports"]
    assert f"{redis_port}:6379" in services["redis"]["ports"]
    assert f"{defaults.gateway_port}:{services['gateway']['environment']['REELSTREAM_GATEWAY_PORT']}" in (
        services["gateway"]["ports"]
    )


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for package in ("reelstream", "bootstrap", "models", "schemas", "streams", "gateway", "data"):
        assert f"COPY {package} {package}" in dockerfile
    assert Path(PROJECT_ROOT / "pyproject.toml").exists()
