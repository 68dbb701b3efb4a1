"""Synchronous runs: check the run and the user's share, wait for a slot, run it now and store it
as a finished job."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.code.schemas import ExecutionResult
from app.code.slots import SyncRunSlots
from app.core.config import Settings
from app.core.db import interactive_writes, utcnow
from app.core.errors import AppError
from app.jobs import repository
from app.jobs.results import failure_values, new_job, outcome_values, run_request_for
from app.jobs.shares import RunShares, off_loop, take_share
from app.jobs.spec import RunBody, RunSpec, resolve_run

if TYPE_CHECKING:
    from app.jobs.models import Job
    from app.observability.metrics import Metrics
    from app.sandbox.manager import SandboxManager


@dataclass(frozen=True)
class SyncRuns:
    """The live objects a synchronous run needs (see app/code/dependencies.py)."""

    settings: Settings
    session_factory: sessionmaker[Session]
    manager: SandboxManager | None
    slots: SyncRunSlots
    shares: RunShares
    metrics: Metrics | None


async def execute(runs: SyncRuns, *, user_id: str, body: RunBody) -> ExecutionResult:
    """Run `body` now for `user_id`; 200-worthy for any run that happened, whatever it did.

    Raises:
        the refusals of resolve_run (nothing stored);
        QuotaExceededError: the user already has MAX_CONCURRENT_RUNS_PER_USER runs in progress
            (synchronous runs and running jobs); nothing stored;
        PoolExhaustedError: no slot or container freed up in time;
        SandboxError: the run could not happen (stored as a failed job).
    """
    settings = runs.settings
    resolve = partial(resolve_run, settings=settings, manager=runs.manager, body=body)
    # The optional policy parses the code: CPU work that stays off the event loop.
    spec = await run_in_threadpool(resolve) if settings.code_policy_enabled else resolve()
    shares = runs.shares
    ticket = await take_share(
        shares, user_id, run_timeout_s=spec.timeout_s + settings.pool_acquire_timeout_s
    )
    try:
        return await runs.slots.run(partial(_run_and_store, runs, user_id=user_id, spec=spec))
    finally:
        await off_loop(shares, shares.release, ticket)


def _run_and_store(runs: SyncRuns, *, user_id: str, spec: RunSpec) -> ExecutionResult:
    """Run and store the run as a finished job in one commit (blocking: runs in a slot thread)."""
    assert runs.manager is not None  # resolve_run refuses a disabled sandbox
    job = new_job(spec, user_id=user_id, mode="sync")
    job.started_at = job.created_at
    error: AppError | None = None
    try:
        request = run_request_for(runs.settings, job)
        values = outcome_values(runs.manager.run(request, user_id=user_id))
    except AppError as exc:
        error, values = exc, failure_values(exc.message)
    store_run(runs, job, values)
    if error is not None:
        raise error
    return ExecutionResult.from_job(job)


def store_run(runs: SyncRuns, job: Job, values: dict[str, Any]) -> None:
    """Store a finished run (a synchronous or live one: somebody waits for it) as a job in one
    commit, ahead of background writers (`interactive_writes`), and count it."""
    for name, value in values.items():
        setattr(job, name, value)
    job.finished_at = utcnow()
    with interactive_writes(), runs.session_factory() as session:
        repository.add(session, job)
        session.commit()
    if runs.metrics is not None:
        runs.metrics.observe_run(
            language=job.language,
            mode=job.mode,
            outcome=job.status,
            duration_s=job.execution_time_s,
        )
