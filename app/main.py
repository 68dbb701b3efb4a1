"""create_app(): middleware, routers, and the lifespan that owns the engine, pool and job runner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.api import API_PREFIX, build_v1_router, version_router
from app.auth.service import ensure_admin_from_settings
from app.core.config import Settings, get_settings
from app.core.db import create_db_engine, create_session_factory
from app.core.error_handlers import install_error_handlers
from app.core.logging import configure_logging
from app.core.middleware import (
    BodySizeLimitMiddleware,
    ContentTypeMiddleware,
    RequestContextMiddleware,
)
from app.core.ratelimit import RATE_LIMIT_HEADERS, install_rate_limiting
from app.core.sentry import init_sentry
from app.jobs.queue import JobRunner, recover
from app.observability import health
from app.observability.metrics import install_metrics
from app.sandbox.manager import SandboxManager

log = structlog.get_logger(__name__)

DESCRIPTION = """
Run untrusted code in hardened, pre-warmed Docker sandboxes and get the output back in milliseconds.

Authenticate with `POST /api/v1/auth/login` (or the **Authorize** button), then call
`POST /api/v1/code/execute` for a synchronous run or `POST /api/v1/jobs` for a queued one.
Every error has the shape `{"error": {"code", "message", "request_id", "details"}}`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_db_engine(settings)
    app.state.engine = engine
    app.state.session_factory = create_session_factory(engine)
    await asyncio.to_thread(ensure_admin_from_settings, app.state.session_factory, settings)
    app.state.sandbox = None
    if settings.sandbox_enabled:
        app.state.sandbox = SandboxManager(settings)
        await asyncio.to_thread(app.state.sandbox.start)
    app.state.job_runner = await asyncio.to_thread(_start_job_runner, app)
    log.info("startup", environment=settings.environment.value, version=__version__)
    try:
        yield
    finally:
        if app.state.job_runner is not None:
            await asyncio.to_thread(app.state.job_runner.stop, settings.shutdown_grace_s)
        if app.state.sandbox is not None:
            await asyncio.to_thread(app.state.sandbox.shutdown)
        engine.dispose()
        log.info("shutdown_complete")


def _start_job_runner(app: FastAPI) -> JobRunner | None:
    """Recover what a previous process left behind, then start the workers (with a sandbox)."""
    _failed, queued = recover(app.state.session_factory)
    if app.state.sandbox is None:
        return None  # queued jobs stay queued until a process with a sandbox runs them
    runner = JobRunner(
        settings=app.state.settings,
        session_factory=app.state.session_factory,
        manager=app.state.sandbox,
        metrics=app.state.metrics,
    )
    runner.start(recovered=queued)
    return runner


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    init_sentry(settings)
    app = FastAPI(
        title="warmbox",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=f"{API_PREFIX}/redoc",
        debug=settings.debug,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(version_router)
    app.include_router(build_v1_router())
    install_metrics(app, settings)
    # Added last = outermost: the request id exists before anything can refuse the request.
    app.add_middleware(ContentTypeMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    # Outside the body checks (hostile requests count too), inside CORS (a 429 keeps its headers).
    install_rate_limiting(app, settings)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=settings.cors_allow_credentials,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=[
            "X-Request-ID",
            "X-API-Version",
            "Retry-After",
            "Location",
            *RATE_LIMIT_HEADERS,
        ],
    )
    app.add_middleware(RequestContextMiddleware, slow_request_ms=settings.slow_request_ms)
    return app


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory app.main:app_factory`."""
    return create_app()
