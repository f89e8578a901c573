"""The FastAPI application: `create_app()` for uvicorn, with injectable pool and client for tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from temporalio.client import Client

from activities.embeddings import EmbeddingSettings, embedder_from_settings
from activities.translation import TranslationService, TranslationSettings, translator_from_settings
from api import calendars, directory, glossary, kb, kpis, problems, quality, rosters, surveys, tickets
from api.errors import (
    DATABASE_UNAVAILABLE,
    ERROR_RESPONSES,
    database_unavailable,
    invalid_data,
    invalid_request,
)
from api.limits import install as install_limits
from api.limits import redact_path, refuse_unknown_query
from api.metrics import ApiMetrics
from db.pool import create_pool
from meridian import temporal
from meridian.settings import Settings, get_settings


def create_app(
    settings: Settings | None = None, *, pool: asyncpg.Pool | None = None, client: Client | None = None
) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned_pool = None
        if pool is None:
            if not settings.database_url:
                raise RuntimeError("DATABASE_URL is not set (meridian dev sets it for you)")
            owned_pool = await create_pool(settings.database_url)
        app.state.settings = settings
        app.state.pool = pool or owned_pool
        app.state.client = client or await temporal.connect(settings)
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
            # Search embeds each query here; the model loads on the first search, not at start.
            app.state.embedder = embedder_from_settings(http, settings.section(EmbeddingSettings))
            app.state.translation = TranslationService(
                app.state.pool, translator_from_settings(http, settings.section(TranslationSettings))
            )
            try:
                yield
            finally:
                if owned_pool is not None:
                    await owned_pool.close()

    app = FastAPI(
        title="Meridian",
        version="0.1.0",
        description="Follow-the-sun, multilingual technical support. Every ticket is a Temporal workflow.",
        lifespan=lifespan,
    )
    log = structlog.get_logger("meridian.api")

    app.state.metrics = metrics = ApiMetrics()
    install_limits(app, settings)  # inside the request log, so refusals are logged and counted

    @app.middleware("http")
    async def log_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        metrics.observe(request, response.status_code, time.perf_counter() - started)
        log.info(
            "request",
            method=request.method,
            path=redact_path(request.url.path),
            status=response.status_code,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response

    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(asyncpg.DataError, invalid_data)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, database_unavailable)
    for module in (tickets, directory, calendars, rosters, problems, kb, glossary, surveys, quality, kpis):
        app.include_router(
            module.router, responses=ERROR_RESPONSES, dependencies=[Depends(refuse_unknown_query)]
        )

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        await metrics.refresh(request.app.state.pool)
        return metrics.exposition()

    @app.get("/healthz", tags=["health"])
    async def healthz(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            async with request.app.state.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            checks["database"] = "ok"
        except (OSError, asyncpg.PostgresError) as err:
            checks["database"] = f"error: {err}"
        try:
            await request.app.state.client.service_client.check_health()
            checks["temporal"] = "ok"
        except Exception as err:  # any failure to reach Temporal means unhealthy, whatever its type
            checks["temporal"] = f"error: {err}"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503
        )

    return app
