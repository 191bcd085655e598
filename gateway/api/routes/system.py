"""GET /health, /stats, /experiments and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import GatewayDep
from gateway.api.models import ExperimentsReport, Health, Stats
from monitoring.experiments import report

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health)
def health(gateway: GatewayDep) -> Health:
    """Broker, Redis, model, worker and rules, each reported separately (always 200; see `status`)."""
    return gateway.health()


@router.get("/stats", response_model=Stats)
def stats(gateway: GatewayDep) -> Stats:
    """Request counts, latency percentiles, cache hit rate and events applied."""
    return gateway.stats()


@router.get("/experiments", response_model=ExperimentsReport, responses={503: {}})
def experiments(gateway: GatewayDep) -> ExperimentsReport:
    """Each A/B arm against the control (the rules' first arm): hit rate of the served lists, its lift with a
    95% interval, the sample size and a verdict, from the worker's attribution counters (docs/experiments.md).
    503 while Redis is unreachable."""
    control = gateway.rules.current().arms[0][0]
    got = report(gateway.state.experiments(), control, gateway.catalog.n)
    return ExperimentsReport(**got, window_s=gateway.settings.attribution_window_s)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(gateway: GatewayDep) -> Response:
    """Prometheus exposition."""
    return Response(generate_latest(gateway.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
