"""`POST /code/execute`: run code now and answer with its result (stored as a finished job)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import require_permission
from app.auth.models import User
from app.auth.permissions import Permission
from app.core.config import Settings
from app.core.errors import PoolExhaustedError
from app.core.ratelimit import execute_rate_limit
from app.jobs import service
from app.jobs.deps import MetricsDep, SandboxDep
from app.jobs.schemas import ExecutionResult, RunBody, error_responses

router = APIRouter(prefix="/code", tags=["code"])

Executor = Annotated[User, Depends(require_permission(Permission.EXECUTE_CODE))]


class RunSlots:
    """Bounds the threads that block on synchronous runs, so long runs can never starve the
    shared threadpool that every other request uses; a caller waits for a slot at most the pool's
    acquire timeout, then gets POOL_EXHAUSTED."""

    def __init__(self, size: int) -> None:
        self.semaphore = anyio.Semaphore(size)
        self.threads = anyio.CapacityLimiter(size)

    @classmethod
    def of(cls, app: FastAPI, settings: Settings) -> RunSlots:
        slots: RunSlots | None = getattr(app.state, "sync_run_slots", None)
        if slots is None:
            slots = app.state.sync_run_slots = cls(max(2, settings.pool_max_size * 2))
        return slots


@router.post(
    "/execute",
    response_model=ExecutionResult,
    summary="Run code now and return its output",
    dependencies=[Depends(execute_rate_limit)],
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503),
)
async def execute(
    body: RunBody, user: Executor, request: Request, sandbox: SandboxDep, metrics: MetricsDep
) -> ExecutionResult:
    """200 for any run that happened, whatever the script did; `success` is exit code 0 without
    a timeout. A run the sandbox could not make is a 503 (and is still recorded as a failed job)."""
    settings: Settings = request.app.state.settings
    resolve = partial(service.resolve_run, settings=settings, manager=sandbox, body=body)
    # The optional policy parses the code: CPU work that stays off the event loop.
    spec = await run_in_threadpool(resolve) if settings.code_policy_enabled else resolve()
    assert sandbox is not None  # resolve_run refuses a disabled sandbox
    slots = RunSlots.of(request.app, settings)
    acquired = False
    with anyio.move_on_after(settings.pool_acquire_timeout_s):
        await slots.semaphore.acquire()
        acquired = True
    if not acquired:
        raise PoolExhaustedError("every sandbox is busy; retry shortly")
    run = partial(
        service.execute_sync,
        settings=settings,
        session_factory=request.app.state.session_factory,
        manager=sandbox,
        metrics=metrics,
        user_id=user.id,
        spec=spec,
    )
    try:
        return await anyio.to_thread.run_sync(run, limiter=slots.threads)
    finally:
        slots.semaphore.release()
