"""docker-compose.kafka.yml stays in step with the settings module and is secure by default (no Docker needed).

Published ports and secrets are checked after compose's own variable interpolation (``${VAR:-default}``,
``${VAR:?error}``, nested), done here by :func:`interpolate` with the rules compose documents.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from reelstream.settings import PROJECT_ROOT, Settings
from reelstream.shell import local_services

COMPOSE = PROJECT_ROOT / "docker-compose.kafka.yml"
#: One innermost ``${...}``: the name, then an optional ``:-``/``-``/``:?``/``?`` and its argument.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^${}]*))?\}")


class ComposeRefused(Exception):
    """``${VAR:?message}`` with VAR unset or empty: compose refuses to start and prints the message."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """``value`` as compose interpolates it with ``env``, innermost variable first."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3) or ""
        found = env.get(name)
        missing = not found if op and op.startswith(":") else found is None
        if op in {":?", "?"} and missing:
            raise ComposeRefused(f"{name}: {arg}")
        if op in {":-", "-"} and missing:
            return arg
        return found or ""

    while (expanded := _VARIABLE.sub(one, value)) != value:
        value = expanded
    return value


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _published(env: dict[str, str]) -> dict[str, list[tuple[str, int, int]]]:
    """Service -> (host address, host port, container port) of every published port, interpolated."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for name, service in _compose()["services"].items():
        for spec in service.get("ports", []):
            parts = interpolate(spec, env).split(":")
            assert len(parts) == 3, f"{name} publishes {spec!r} without a host address (all interfaces)"
            out.setdefault(name, []).append((parts[0], int(parts[1]), int(parts[2])))
    return out


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


def test_redis_runs_with_the_memory_limits_of_the_settings() -> None:
    """The compose Redis gets the listpack limits ``reelstream infra`` starts its own with (a value changed in
    settings alone would leave the two deployments with different bytes per rating)."""
    command = _compose()["services"]["redis"]["command"]
    memory = local_services.redis_memory_args(Settings())
    at = command.index(memory[0])
    assert command[at : at + len(memory)] == memory


def test_every_variable_is_a_setting_and_addresses_match_the_services() -> None:
    known = _settings_env_names()
    services = _compose()["services"]
    for name in ("worker", "archive", "gateway"):
        env = services[name]["environment"]
        unknown = {k for k in env if k not in known}
        assert not unknown, f"{name} sets variables Settings does not read: {unknown}"
        settings = Settings(**{"kafka_bootstrap": env["KAFKA_BOOTSTRAP"], "redis_url": env["REDIS_URL"]})
        host, port = local_services.kafka_address(settings.kafka_bootstrap)
        assert host == "kafka" and port == 9092
        rhost, rport = local_services.redis_address(settings.redis_url)
        assert rhost == "redis" and rport == 6379
        assert int(env["REELSTREAM_TOPIC_PARTITIONS"]) == Settings().topic_partitions


def test_published_ports_match_the_default_settings() -> None:
    services = _compose()["services"]
    defaults = Settings()
    _, kafka_port = local_services.kafka_address(defaults.kafka_bootstrap)
    _, redis_port = local_services.redis_address(defaults.redis_url)
    published = {name: [(host_port, port) for _, host_port, port in ports] for name, ports in _published({}).items()}
    assert (kafka_port, 9092) in published["kafka"]
    assert (redis_port, 6379) in published["redis"]
    assert (defaults.gateway_port, int(services["gateway"]["environment"]["REELSTREAM_GATEWAY_PORT"])) in published[
        "gateway"
    ]


def test_every_port_is_published_on_loopback_unless_asked() -> None:
    by_default = _published({})
    assert {"kafka", "redis", "gateway", "prometheus", "grafana"} <= set(by_default)
    assert {host for ports in by_default.values() for host, _, _ in ports} == {"127.0.0.1"}
    everything = _published({"REELSTREAM_PUBLISH_HOST": "0.0.0.0"})
    assert {host for ports in everything.values() for host, _, _ in ports} == {"0.0.0.0"}
    gateway_only = _published({"REELSTREAM_GATEWAY_PUBLISH_HOST": "0.0.0.0"})
    assert {name for name, ports in gateway_only.items() if any(h != "127.0.0.1" for h, _, _ in ports)} == {"gateway"}


def test_compose_requires_the_admin_token_and_the_grafana_password() -> None:
    services = _compose()["services"]
    token_spec = services["gateway"]["environment"]["REELSTREAM_ADMIN_TOKEN"]
    password_spec = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    for spec, variable in ((token_spec, "REELSTREAM_ADMIN_TOKEN"), (password_spec, "GRAFANA_ADMIN_PASSWORD")):
        for env in ({}, {variable: ""}):
            with pytest.raises(ComposeRefused, match=variable):
                interpolate(spec, env)
    token = "Zr8uF2" * 5
    assert interpolate(token_spec, {"REELSTREAM_ADMIN_TOKEN": token}) == token
    # What the gateway container then runs with: an explicit token on a wildcard bind is accepted.
    gateway = Settings(admin_token=token, gateway_host=services["gateway"]["environment"]["REELSTREAM_GATEWAY_HOST"])
    assert gateway.gateway_host == "0.0.0.0" and gateway.admin_secret(gateway.gateway_host) == token
    # No secret has a default anywhere in the file: every ${VAR...} naming one is a :? requirement.
    for match in _VARIABLE.finditer(COMPOSE.read_text()):
        if re.search(r"TOKEN|PASSWORD|SECRET", match.group(1)):
            assert match.group(2) == ":?", match.group(0)


def test_dockerfile_copies_every_package() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for package in ("reelstream", "bootstrap", "models", "schemas", "streams", "gateway", "monitoring", "data"):
        assert f"COPY {package} {package}" in dockerfile
    assert Path(PROJECT_ROOT / "pyproject.toml").exists()


# --- Prometheus and Grafana (deploy/) ---------------------------------------------------------------

DEPLOY = PROJECT_ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "reelstream.json"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}


def _exported_series() -> set[str]:
    """Every sample name the gateway's and the worker's registries can expose."""
    from gateway.telemetry import Telemetry
    from streams.metrics import WorkerMetrics

    names: set[str] = set()
    for registry in (Telemetry().registry, WorkerMetrics().registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def test_prometheus_and_grafana_services_mount_the_repo_provisioning() -> None:
    services = _compose()["services"]
    assert services["prometheus"]["image"].startswith("prom/prometheus")
    assert services["grafana"]["image"].startswith("grafana/grafana")
    mounts = [*services["prometheus"]["volumes"], *services["grafana"]["volumes"]]
    for mount in mounts:
        source = mount.split(":")[0]
        assert (PROJECT_ROOT / source).exists(), f"{mount}: {source} is not in the repository"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert ("127.0.0.1", 9090, 9090) in _published({})["prometheus"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/reelstream.yml").read_text())
    dash_mount = next(m for m in services["grafana"]["volumes"] if m.startswith("./deploy/grafana/dashboards:"))
    assert provider["providers"][0]["options"]["path"] == dash_mount.split(":")[1]


def test_scrape_targets_are_the_gateway_and_worker_ports() -> None:
    services = _compose()["services"]
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape}
    assert all(job.get("metrics_path", "/metrics") == "/metrics" for job in scrape)
    gateway_env, worker_env = services["gateway"]["environment"], services["worker"]["environment"]
    assert targets["reelstream-gateway"] == [f"gateway:{gateway_env['REELSTREAM_GATEWAY_PORT']}"]
    assert targets["reelstream-worker"] == [f"worker:{worker_env['REELSTREAM_WORKER_WEB_PORT']}"]
    assert worker_env["REELSTREAM_WORKER_WEB_BIND"] == "0.0.0.0"  # reachable from the prometheus container
    assert Settings(**{"worker_web_bind": worker_env["REELSTREAM_WORKER_WEB_BIND"]}).worker_web_bind == "0.0.0.0"


def test_dashboard_json_parses_and_queries_only_exported_series() -> None:
    import json
    import re

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "reelstream" and dashboard["panels"]
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b((?:reelstream|gateway)_[a-z0-9_]+)\b", e)}
    exported = _exported_series()
    unknown = used - exported
    assert not unknown, f"the dashboard queries series nothing exports: {sorted(unknown)}"
    # Each required family is on the dashboard: lag, freshness, worker and gateway series.
    for family in ("reelstream_lag_messages", "reelstream_freshness_seconds_bucket",
                   "reelstream_worker_dead_letters_total", "reelstream_worker_batch_size_bucket",
                   "reelstream_worker_apply_seconds_bucket", "gateway_request_seconds_bucket", "gateway_cache_total",
                   "gateway_recommendations_total"):  # fmt: skip
        assert family in used, f"{family} is not on the dashboard"
    datasource_uid = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ][0]["uid"]
    assert all(panel["datasource"]["uid"] == datasource_uid for panel in dashboard["panels"])


def test_services_run_commands_the_cli_has() -> None:
    from typer.main import get_command

    from reelstream.shell.cli import app

    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    services = _compose()["services"]
    for name in ("init", "worker", "archive", "gateway"):
        argv = services[name]["command"]
        assert argv[0] == "reelstream" and argv[1] in commands, (name, argv)
    assert services["init"]["command"] == ["reelstream", "prepare"]
