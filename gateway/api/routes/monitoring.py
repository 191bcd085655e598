"""GET /lag and GET /freshness: the background monitors' latest figures (gateway/monitors.py)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status

from gateway.api.deps import SettingsDep
from gateway.api.models import FreshnessReport, LagReport, PartitionLagPublic, ProbePublic
from gateway.monitors import LagSampler, ProbeRunner, worker_freshness

router = APIRouter(tags=["monitoring"])


def _sampler(request: Request) -> LagSampler | None:
    return getattr(request.app.state, "lag", None)


def _probes(request: Request) -> ProbeRunner | None:
    return getattr(request.app.state, "probes", None)


@router.get("/lag", response_model=LagReport, responses={503: {}})
def lag(sampler: Annotated[LagSampler | None, Depends(_sampler)]) -> LagReport:
    """Consumer lag of the worker group per partition with its verdicts (the latest background sample).

    503 until the first sample exists (broker unreachable, topics missing, or sampling off).
    """
    if sampler is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "lag sampling is off (gateway_lag_interval_s=0)")
    latest = sampler.latest
    if latest is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"no lag sample yet: {sampler.error or 'starting'}")
    return LagReport(
        group=latest.group, at=latest.at, age_s=round(max(time.time() - latest.at, 0.0), 3),
        verdict=latest.verdict, total_lag=latest.total_lag, samples=sampler.samples, error=sampler.error,
        partitions=[PartitionLagPublic(**vars(p)) for p in latest.partitions],
    )  # fmt: skip


@router.get("/freshness", response_model=FreshnessReport)
async def freshness(
    probes: Annotated[ProbeRunner | None, Depends(_probes)],
    settings: SettingsDep,
    last: Annotated[int, Query(ge=0, le=240, description="How many recent probes to return.")] = 60,
) -> FreshnessReport:
    """End-to-end freshness: the latest probes (marker rating produced -> effect in Redis) and percentiles."""
    workers = await worker_freshness(settings.redis_url)
    if probes is None:
        return FreshnessReport(interval_s=0.0, probes=0, lost=0, percentiles_ms={}, recent=[], workers=workers,
                               error="probing is off (probe_interval_s=0)")  # fmt: skip
    recent = list(probes.recent)[-last:] if last else []
    return FreshnessReport(
        interval_s=settings.probe_interval_s, probes=len(probes.recent), lost=probes.lost,
        percentiles_ms=probes.percentiles_ms(), recent=[ProbePublic(**r.as_dict()) for r in recent],
        workers=workers, error=probes.error,
    )  # fmt: skip
