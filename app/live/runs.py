"""One interactive run for the WebSocket: run it live, publish what it prints, store it as a job.

The output travels through the event log (resource "run", keyed by the job id), which bounds it
by the run's output limit whatever the reader's speed; the run's thread never waits for the
reader. The run is stored like a synchronous run (mode "live"), so it shows in GET /jobs.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

from app.auth.models import new_id
from app.code.schemas import ExecutionResult
from app.code.service import SyncRuns, store_run
from app.core.errors import AppError, error_body
from app.events.log import EventLog
from app.jobs.results import failure_values, new_job, outcome_values, run_request_for
from app.jobs.spec import RunSpec

RESOURCE = "run"
MODE = "live"


def open_run(events: EventLog, runs: SyncRuns) -> str:
    """A new run id (its job's id) with an event stream ready for its output."""
    run_id = new_id()
    events.open(RESOURCE, run_id, output_limit=runs.settings.run_output_limit_bytes)
    return run_id


def error_event(exc: AppError, request_id: str | None) -> dict[str, Any]:
    return {"status": int(exc.status_code), **error_body(exc.code, exc.message, request_id)}


def run_and_store(
    runs: SyncRuns, events: EventLog, *, run_id: str, user_id: str, spec: RunSpec
) -> ExecutionResult:
    """Run with output streamed and stdin open, store the job, and end the event stream with the
    result (blocking: runs in one of the synchronous-run slots' threads).

    Raises:
        AppError: the run could not happen (stored as a failed job).
    """
    assert runs.manager is not None  # resolve_run refuses a disabled sandbox
    job = new_job(spec, user_id=user_id, mode=MODE)
    job.id = run_id
    job.started_at = job.created_at
    error: AppError | None = None
    try:
        request = replace(run_request_for(runs.settings, job), stream=True, interactive=True)
        on_output = partial(events.publish, RESOURCE, run_id)
        values = outcome_values(runs.manager.run(request, user_id=user_id, on_output=on_output))
    except AppError as exc:
        error, values = exc, failure_values(exc.message)
    store_run(runs, job, values)
    if error is not None:
        raise error
    result = ExecutionResult.from_job(job)
    events.finish(RESOURCE, run_id, "result", result.model_dump(mode="json"))
    return result
