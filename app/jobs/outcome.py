"""The parts of a run's answer shared by `/code/execute` and `/jobs`: its compile step and usage."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, Field

from app.jobs.models import Job


class CompileOutcome(BaseModel):
    """The compile step of a compiled language, apart from the program's own output."""

    output: str
    exit_code: int
    time: float = Field(description="seconds")
    cached: bool = Field(description="a build of the same source was reused; nothing compiled")

    @classmethod
    def from_job(cls, job: Job) -> Self | None:
        if job.compile_exit_code is None:
            return None
        return cls(
            output=job.compile_output or "",
            exit_code=job.compile_exit_code,
            time=job.compile_time_s or 0.0,
            cached=bool(job.compile_cached),
        )


class UsageOutcome(BaseModel):
    """What the run's whole process tree used."""

    cpu_time_ms: float
    wall_time_ms: float
    peak_memory_kb: int

    @classmethod
    def from_job(cls, job: Job) -> Self | None:
        if job.cpu_time_ms is None or job.wall_time_ms is None or job.peak_memory_kb is None:
            return None
        return cls(
            cpu_time_ms=job.cpu_time_ms,
            wall_time_ms=job.wall_time_ms,
            peak_memory_kb=job.peak_memory_kb,
        )
