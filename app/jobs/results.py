"""How a job becomes a sandbox request, and how a run's result becomes the job's columns.

The synchronous path and the job workers store runs the same way, through these functions.
"""

from __future__ import annotations

from typing import Any

from app.auth.models import new_id
from app.core.config import Settings
from app.core.db import utcnow
from app.jobs.extras import dump_args, dump_files, load_args, load_files
from app.jobs.models import Job, JobStatus
from app.jobs.spec import RunSpec
from app.sandbox.types import RunRequest, RunResult


def new_job(spec: RunSpec, *, user_id: str, mode: str, **fields: Any) -> Job:
    """A job row for `spec`, not yet added to a session."""
    return Job(
        id=new_id(),
        user_id=user_id,
        mode=mode,
        language=spec.language,
        code=spec.code,
        stdin=spec.stdin,
        timeout_s=spec.timeout_s,
        args=dump_args(spec.args),
        files=dump_files(spec.files),
        created_at=utcnow(),
        **fields,
    )


def run_request_for(settings: Settings, job: Job) -> RunRequest:
    """The sandbox request of a job; the job id is the run id, so cancel can find the run."""
    return RunRequest(
        code=job.code,
        language=job.language,
        stdin=job.stdin or "",
        timeout_s=job.timeout_s,
        output_limit_bytes=settings.run_output_limit_bytes,
        run_id=job.id,
        args=load_args(job.args),
        files=load_files(job.files),
        # A synchronous or live run: its caller waits for the answer (queued jobs: nobody does).
        park_delay_ms=settings.pool_park_delay_ms if job.mode != "async" else 0,
    )


def outcome_values(result: RunResult) -> dict[str, Any]:
    """The job columns for a run that happened."""
    if result.cancelled:
        status = JobStatus.CANCELLED
    elif result.timed_out:
        status = JobStatus.TIMED_OUT
    elif result.exit_code == 0 and (result.compile is None or result.compile.success):
        status = JobStatus.SUCCEEDED
    else:
        status = JobStatus.FAILED  # a compile error included: the run happened and failed
    return {
        **_compile_values(result),
        **_usage_values(result),
        "status": status.value,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "exit_code": result.exit_code,
        "execution_time_s": result.duration_s,
        "timed_out": result.timed_out,
        "memory_exceeded": result.memory_exceeded,
        "output_truncated": result.output_truncated,
    }


def _compile_values(result: RunResult) -> dict[str, Any]:
    compiled = result.compile
    return {
        "compile_output": compiled.output if compiled else None,
        "compile_exit_code": compiled.exit_code if compiled else None,
        "compile_time_s": compiled.duration_s if compiled else None,
        "compile_cached": compiled.cached if compiled else None,
    }


def _usage_values(result: RunResult) -> dict[str, Any]:
    usage = result.usage
    return {
        "cpu_time_ms": usage.cpu_time_ms if usage else None,
        "wall_time_ms": usage.wall_time_ms if usage else None,
        "peak_memory_kb": usage.peak_memory_kb if usage else None,
    }


def failure_values(reason: str) -> dict[str, Any]:
    """The job columns for a run that could not happen; the reason is the error text."""
    return {"status": JobStatus.FAILED.value, "stdout": "", "stderr": reason, "exit_code": None}


def is_success(job: Job) -> bool:
    return job.status == JobStatus.SUCCEEDED.value and job.exit_code == 0 and not job.timed_out
