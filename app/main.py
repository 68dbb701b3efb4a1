"""create_app(): middleware, routers, and the lifespan that builds the live objects (database
engine, sandbox pool, job queue and workers, sync-run slots) that dependencies hand to routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route

from app import __version__
from app.api import API_PREFIX, build_v1_router, operation_id, version_router
from app.auth.callers import TokenCallers
from app.auth.hashing import configure as configure_password_hashing
from app.auth.service import ensure_admin_from_settings
from app.code.slots import SyncRunSlots
from app.core.config import Settings, get_settings, with_signing_key, with_webhook_secret
from app.core.db import create_db_engine, create_session_factory
from app.core.error_handlers import install_error_handlers
from app.core.logging import configure_logging
from app.core.middleware import (
    BodySizeLimitMiddleware,
    ContentTypeMiddleware,
    RequestContextMiddleware,
)
from app.core.migrations import schema_problem
from app.core.sentry import init_sentry
from app.events.log import EventLog, InMemoryEventLog
from app.events.redis_log import RedisEventLog
from app.jobs.queue import JobQueue
from app.jobs.shares import InMemoryRunShares, RunShares
from app.jobs.shares_redis import RedisRunShares
from app.jobs.worker import JobWorkerPool, recover
from app.mcp.endpoint import McpEndpoint
from app.mcp.tools import build_server as build_mcp_server
from app.observability import health
from app.observability.metrics import install_metrics
from app.ratelimit.counter import RATE_LIMIT_HEADERS
from app.ratelimit.dependencies import install_rate_limiting
from app.sandbox.manager import SandboxManager
from app.sessions.directory import directory_for
from app.sessions.forwarding import SessionForwardingMiddleware
from app.sessions.service import SessionService
from app.submissions import worker as submissions_worker
from app.webhooks.urls import resolve_host
from app.webhooks.worker import DeliveryWorker

log = structlog.get_logger(__name__)

DESCRIPTION = """
Run untrusted code in hardened, pre-warmed Docker sandboxes and get the output back in milliseconds.

Authenticate with `POST /api/v1/auth/login` (or the **Authorize** button), then call
`POST /api/v1/code/execute` for a synchronous run, `POST /api/v1/jobs` for a queued one, or
`POST /api/v1/submissions` to grade a program against test cases.
Every error has the shape `{"error": {"code", "message", "request_id", "details"}}`.

Live output: `GET /api/v1/jobs/{id}/events` streams a job as Server-Sent Events (`status`,
`stdout`, `stderr`, `result`; resume with `Last-Event-ID`); a browser's `EventSource` passes
`?ticket=` from `POST /api/v1/jobs/{id}/events/ticket` instead of a token. Interactive runs use
the WebSocket `/api/v1/code/ws` (not describable in OpenAPI; its protocol is in the README).
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    db_engine = create_db_engine(settings)
    app.state.db_engine = db_engine
    app.state.session_factory = create_session_factory(db_engine)
    configure_password_hashing(settings)
    app.state.event_log, app.state.run_event_log = _event_logs(settings)
    await asyncio.to_thread(ensure_admin_from_settings, app.state.session_factory, settings)
    app.state.sandbox = None
    if settings.sandbox_enabled:
        app.state.sandbox = SandboxManager(settings)
        await asyncio.to_thread(app.state.sandbox.start)
    app.state.webhook_worker = await asyncio.to_thread(_start_webhooks, app)
    app.state.sync_run_slots = _sync_run_slots(settings)
    app.state.run_shares = _run_shares(settings)
    app.state.job_queue, app.state.job_workers = await asyncio.to_thread(_start_jobs, app)
    app.state.submission_queue, app.state.submission_workers = await asyncio.to_thread(
        _start_submissions, app
    )
    app.state.sessions = SessionService(
        settings=settings,
        session_factory=app.state.session_factory,
        manager=app.state.sandbox,
        shares=app.state.run_shares,
        directory=directory_for(settings),
    )
    await app.state.sessions.start()
    mcp_running = app.state.mcp.running() if app.state.mcp is not None else None
    if mcp_running is not None:
        await mcp_running.__aenter__()
    log.info("startup", environment=settings.environment.value, version=__version__)
    try:
        yield
    finally:
        if app.state.submission_workers is not None:
            await asyncio.to_thread(app.state.submission_workers.stop, settings.shutdown_grace_s)
        if mcp_running is not None:
            await mcp_running.__aexit__(None, None, None)
        await app.state.sessions.stop()  # before the pool goes: its containers end with it
        if app.state.job_workers is not None:
            await asyncio.to_thread(app.state.job_workers.stop, settings.shutdown_grace_s)
        # After the job workers: a job they fail on the way out still gets its delivery stored.
        await asyncio.to_thread(app.state.webhook_worker.stop, settings.shutdown_grace_s)
        if app.state.sandbox is not None:
            await asyncio.to_thread(app.state.sandbox.shutdown)
        await asyncio.to_thread(_close_shared, app.state.run_shares, app.state.event_log)
        db_engine.dispose()
        log.info("shutdown_complete")


def _event_logs(settings: Settings) -> tuple[EventLog, EventLog]:
    """The log that jobs and submissions publish to (Redis when clustered, so a follower on any
    node sees them), and the one of WebSocket runs, whose only reader is on the same node."""
    local = InMemoryEventLog(
        retention_s=settings.events_retention_s, max_finished=settings.events_max_finished
    )
    if not settings.clustered:
        return local, local
    shared = RedisEventLog(
        settings.redis_url, namespace=settings.app_name, retention_s=settings.events_retention_s
    )
    return shared, local


def _run_shares(settings: Settings) -> RunShares:
    """Per-user shares of sync runs, jobs, submissions and sessions: in Redis when clustered, so
    a user's runs are counted once whichever node they reach."""
    limit = settings.max_concurrent_runs_per_user
    if not settings.clustered:
        return InMemoryRunShares(limit)
    return RedisRunShares(settings.redis_url, limit, namespace=settings.app_name)


def _close_shared(*parts: object) -> None:
    """Stop the Redis listener threads of the shared parts (nothing to stop on one node)."""
    for part in parts:
        close = getattr(part, "close", None)
        if close is not None:
            close()


def _sync_run_slots(settings: Settings) -> SyncRunSlots:
    """Twice the pool's size, so a run can wait for a container while another is being reset;
    a caller waits for a slot at most the pool's acquire timeout."""
    return SyncRunSlots(
        size=max(2, settings.pool_max_total * 2), wait_s=settings.pool_acquire_timeout_s
    )


def _start_webhooks(app: FastAPI) -> DeliveryWorker:
    """Deliveries left due or in flight by a previous process are sent from here on."""
    worker = DeliveryWorker(
        settings=app.state.settings,
        session_factory=app.state.session_factory,
        resolver=app.state.webhook_resolver,
    )
    worker.start()
    return worker


def _start_jobs(app: FastAPI) -> tuple[JobQueue | None, JobWorkerPool | None]:
    """Recover what a previous process left behind, then start the workers (with a sandbox)."""
    _failed, queued = recover(app.state.session_factory, app.state.settings.effective_node_id)
    if app.state.sandbox is None:
        return None, None  # queued jobs stay queued until a process with a sandbox runs them
    settings: Settings = app.state.settings
    queue = JobQueue(
        capacity=settings.job_queue_max,
        per_user=settings.job_queue_max_per_user,
        workers=settings.effective_job_workers,
        shares=app.state.run_shares,
    )
    queue.requeue(queued)
    workers = JobWorkerPool(
        settings=settings,
        session_factory=app.state.session_factory,
        manager=app.state.sandbox,
        queue=queue,
        metrics=app.state.metrics,
        events=app.state.event_log,
    )
    workers.start()
    return queue, workers


def _start_submissions(
    app: FastAPI,
) -> tuple[JobQueue | None, submissions_worker.SubmissionWorkerPool | None]:
    """Recover submissions as jobs are recovered; graders share the users' run shares."""
    queued = submissions_worker.recover(
        app.state.session_factory, app.state.settings.effective_node_id
    )
    if app.state.sandbox is None:
        return None, None
    settings: Settings = app.state.settings
    queue = JobQueue(
        capacity=settings.submission_queue_max,
        per_user=settings.submission_queue_max_per_user,
        workers=settings.effective_submission_workers,
        shares=app.state.run_shares,
    )
    queue.requeue(queued)
    workers = submissions_worker.SubmissionWorkerPool(
        settings=settings,
        session_factory=app.state.session_factory,
        manager=app.state.sandbox,
        queue=queue,
        events=app.state.event_log,
    )
    workers.start()
    return queue, workers


def _mount_mcp(app: FastAPI) -> McpEndpoint:
    """The MCP endpoint (issue 13) at /mcp: a plain route, outside the OpenAPI schema."""
    endpoint = McpEndpoint(build_mcp_server())
    app.router.routes.append(Route("/mcp", endpoint=endpoint, methods=["GET", "POST", "DELETE"]))
    return endpoint


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = with_webhook_secret(with_signing_key(settings or get_settings()))
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
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.webhook_resolver = resolve_host  # tests put their own here before the start
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(version_router)
    app.include_router(build_v1_router())
    app.state.mcp = _mount_mcp(app) if settings.mcp_enabled else None
    install_metrics(app, settings)
    # Added last = outermost: the request id exists before anything can refuse the request.
    app.add_middleware(ContentTypeMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    # Outside the body checks (hostile requests count too), inside CORS (a 429 keeps its headers).
    install_rate_limiting(app, settings, TokenCallers(settings))
    if settings.clustered:  # outside the rate limits: the owner counts a forwarded request
        app.add_middleware(SessionForwardingMiddleware, settings=settings)
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


def refuse_unmigrated_database(settings: Settings) -> None:
    """Stop with one line naming the fix, instead of a `no such table` traceback on first use.

    Runs before uvicorn starts the lifespan: an exception there would be printed as a traceback.
    """
    db_engine = create_db_engine(settings)
    try:
        problem = schema_problem(db_engine)
    finally:
        db_engine.dispose()
    if problem is not None:
        raise SystemExit(f"warmbox: cannot start: {problem}")


def app_factory() -> FastAPI:
    """Entry point for `uvicorn --factory app.main:app_factory`."""
    settings = get_settings()
    refuse_unmigrated_database(settings)
    return create_app(settings)
