"""GET /health, /stats and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import GatewayDep
from gateway.api.models import Health, Stats

router = APIRouter(tags=["system"])


@router.get("/health", response_model=Health)
def health(gateway: GatewayDep) -> Health:
    """Broker, Redis, model, worker and rules, each reported separately (always 200; see `status`)."""
    return gateway.health()


@router.get("/stats", response_model=Stats)
def stats(gateway: GatewayDep) -> Stats:
    """Request counts, latency percentiles, cache hit rate and events applied."""
    return gateway.stats()


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(gateway: GatewayDep) -> Response:
    """Prometheus exposition."""
    return Response(generate_latest(gateway.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
