"""The FastAPI application: wiring only (collaborators, routers, error mapping, middleware).

``create_app()`` builds everything from the settings at start-up (model, feature
store, rules file, Redis, producer). Tests and the benchmark pass a ready
:class:`~gateway.service.Gateway` and producer instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.api.body_limit import BodyLimitMiddleware
from gateway.api.routes import dashboard, monitoring, movies, ratings, recommendations, reports, rules, system, users
from gateway.catalog import Catalog
from gateway.corating import CoRatingTerm
from gateway.errors import BrokerUnavailable, StateUnavailable, body_error, http_status, validation_detail
from gateway.impressions import ImpressionRecorder
from gateway.monitors import LagSampler, ProbeRunner
from gateway.prior import ItemPrior
from gateway.producer import EventPublisher, KafkaEventPublisher
from gateway.rules import RulesStore
from gateway.service import Gateway
from gateway.shutdown import Shutdown
from gateway.state import RedisState
from gateway.telemetry import Telemetry, TelemetryMiddleware
from reelstream.errors import DataError, ReelstreamError
from reelstream.settings import Settings, get_settings

__all__ = ["build_gateway", "create_app", "serving_app"]

log = logging.getLogger(__name__)


def build_gateway(settings: Settings) -> Gateway:
    """Load the current model and feature store once and wire the live collaborators."""
    from bootstrap.store import load_store
    from models.registry import ModelSet
    from models.runtime import ModelRuntime, current_model_dir

    runtime = ModelRuntime.load(current_model_dir(settings.models_dir))
    try:
        store = load_store(settings.store_dir)
    except DataError:
        store = None
    # the novelty denominator: users with a HISTORY rating (users.parquet counts HISTORY only)
    history_users = 0 if store is None else int((store.users["n_ratings"].fill_null(0) > 0).sum())

    def catalog_of(rt: ModelRuntime) -> Catalog:
        if store is None:
            return Catalog.build(rt, None)
        return Catalog.build(rt, store.items, side_names=store.side_names, store_side=store.item_side,
                             history_users=history_users)  # fmt: skip

    state = RedisState(settings.redis_url, timeout=settings.gateway_redis_timeout)
    gateway = Gateway(settings, catalog_of(runtime), RulesStore(settings.rules_path), state, prior=ItemPrior(runtime),
                      corating=CoRatingTerm(runtime))  # fmt: skip

    def load_model(version: str) -> tuple[Catalog, ItemPrior]:
        """Another model a hot swap names (streams/swap.py), loaded from var/models/{version}."""
        rt = ModelSet(settings.models_dir).load(version)
        gateway.coratings[rt.version] = CoRatingTerm(rt)
        return catalog_of(rt), ItemPrior(rt)

    gateway.load_model = load_model
    with contextlib.suppress(StateUnavailable):  # Redis down: the primed HISTORY prior until it answers
        gateway.refresh_models()
        gateway.refresh_prior()
    return gateway


async def _refresh_every(what: str, refresh: Callable[[], object], every_s: float) -> None:
    """Run ``refresh`` in the threadpool every ``every_s`` for the app's lifetime; no error ends the loop.

    Redis away is expected (StateUnavailable, quiet); anything else is logged with its traceback, and the
    gateway keeps serving what it refreshed last instead of silently never refreshing again.
    """
    while True:
        try:
            await run_in_threadpool(refresh)
        except StateUnavailable:
            pass
        except Exception:
            log.exception("refreshing %s failed; retrying in %.1f s", what, every_s)
        await asyncio.sleep(every_s)


async def _refresh_movies(gateway: Gateway, every_s: float) -> None:
    """Movies announced by MovieEvents (``rs:movie:*``) into the catalogue, every ``gateway_movie_refresh_s``."""
    await _refresh_every("announced movies", gateway.refresh_movies, every_s)


async def _refresh_models(gateway: Gateway, every_s: float) -> None:
    """Follow ``rs:model`` (a hot swap), every ``gateway_model_refresh_s``."""
    await _refresh_every("the serving model", gateway.refresh_models, every_s)


async def _refresh_prior(gateway: Gateway, every_s: float) -> None:
    """The model's item prior from the worker's ``rs:items:prior``, every ``gateway_prior_refresh_s``."""
    await _refresh_every("the item prior", gateway.refresh_prior, every_s)


def _probe_movies(gateway: Gateway) -> list[int]:
    """Movies the worker's model knows (a freshness probe must never be dead-lettered)."""
    cat = gateway.catalog
    return [int(m) for m in cat.movie_ids[cat.in_model]]


def _start_monitors(app: FastAPI, settings: Settings, telemetry: Telemetry) -> list[asyncio.Task[None]]:
    tasks = []
    if settings.gateway_lag_interval_s > 0:
        app.state.lag = LagSampler(settings, telemetry)
        tasks.append(asyncio.create_task(app.state.lag.run()))
    if settings.probe_interval_s > 0:
        app.state.probes = ProbeRunner(settings, telemetry, lambda: _probe_movies(app.state.gateway))
        tasks.append(asyncio.create_task(app.state.probes.run()))
    return tasks


def _install_request_error_handlers(app: FastAPI) -> None:
    """Answers for requests refused before a route runs (docs/gateway.md, "Error answers").

    FastAPI's own 422 renders the refused input as parsed, which fails (a 500) for NaN, Infinity,
    bytes that are not UTF-8 or lone surrogates; its 400 for an unparsable body says only "There was
    an error parsing the body".
    """

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc.errors())}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and (reason := body_error(exc.__cause__)) is not None:
            detail = [{"type": "json_invalid", "loc": ["body"], "msg": reason, "input": {}}]
            return JSONResponse({"detail": detail}, status_code=422)
        return await http_exception_handler(request, exc)


def create_app(
    settings: Settings | None = None,
    *,
    gateway: Gateway | None = None,
    producer: EventPublisher | None = None,
    monitors: bool | None = None,
    impressions: bool | None = None,
) -> FastAPI:
    """The app; ``monitors`` (lag sampler, freshness probe) and ``impressions`` (recording served lists, when
    ``gateway_impressions`` allows) default to on only when it builds its own gateway."""
    settings = settings or get_settings()
    run_monitors = gateway is None if monitors is None else monitors
    record = settings.gateway_impressions and (gateway is None if impressions is None else impressions)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if getattr(app.state, "gateway", None) is None:
            app.state.gateway = await run_in_threadpool(build_gateway, settings)
        if getattr(app.state, "producer", None) is None:
            app.state.producer = KafkaEventPublisher(settings)
        app.state.gateway.telemetry = telemetry
        tasks = [asyncio.create_task(_refresh_movies(app.state.gateway, settings.gateway_movie_refresh_s))]
        if app.state.gateway.load_model is not None:
            tasks.append(asyncio.create_task(_refresh_models(app.state.gateway, settings.gateway_model_refresh_s)))
        if app.state.gateway.prior.active:
            tasks.append(asyncio.create_task(_refresh_prior(app.state.gateway, settings.gateway_prior_refresh_s)))
        if run_monitors:
            tasks += _start_monitors(app, settings, telemetry)
        recorder = None
        if record:
            recorder = app.state.gateway.impressions = ImpressionRecorder(
                settings, lambda outcome, n: telemetry.impressions.labels(outcome).inc(n)
            )
            tasks.append(asyncio.create_task(recorder.run()))
        try:
            yield
        finally:  # each step bounded (gateway/shutdown.py): the process always exits
            shutdown = Shutdown()
            await shutdown.cancel_tasks(tasks)
            if recorder is not None:
                await shutdown.step("impression recorder close", recorder.close)
                app.state.gateway.impressions = None
            await shutdown.step("rating producer close", app.state.producer.close)
            await shutdown.step("Redis close", app.state.gateway.state.aclose)

    app = FastAPI(
        title="reelstream gateway",
        version="0.1.0",
        summary="Rule-filtered, explained movie recommendations served from live Redis state.",
        lifespan=lifespan,
    )
    telemetry = gateway.telemetry if gateway is not None else Telemetry()
    app.state.gateway = gateway
    app.state.producer = producer
    app.state.lag = None
    app.state.probes = None
    app.dependency_overrides = {}
    for module in (recommendations, users, movies, ratings, rules, system, monitoring, reports, dashboard):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=dashboard.STATIC_DIR), name="static")
    _install_request_error_handlers(app)

    @app.exception_handler(ReelstreamError)
    async def _reelstream_error(request: Request, exc: ReelstreamError) -> JSONResponse:
        code = http_status(exc)
        headers = {"Retry-After": str(settings.gateway_retry_after_s)} if isinstance(exc, BrokerUnavailable) else None
        if isinstance(exc, BrokerUnavailable):
            app.state.gateway.telemetry.ratings.labels("broker_unavailable").inc()
        return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)

    app.add_middleware(BodyLimitMiddleware, limit=settings.gateway_max_body_bytes)
    app.add_middleware(TelemetryMiddleware, telemetry=telemetry)  # outermost: it counts the 413s too
    return app


def serving_app() -> FastAPI:
    """The app as ``reelstream gateway`` serves it: settings from the environment, one BLAS thread.

    A factory without arguments, so that uvicorn can build it in each of ``--workers`` processes.
    """
    from gateway._blas import limit_blas_threads

    limit_blas_threads(1)  # requests run concurrently already; see gateway/_blas.py
    return create_app(get_settings())
