"""Dependencies shared by the code, jobs and sandbox routers: the live objects of the lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.jobs.queue import JobRunner
from app.observability.metrics import Metrics
from app.sandbox.manager import SandboxManager


async def get_sandbox(request: Request) -> SandboxManager | None:
    return getattr(request.app.state, "sandbox", None)


async def get_runner(request: Request) -> JobRunner | None:
    return getattr(request.app.state, "job_runner", None)


async def get_metrics(request: Request) -> Metrics | None:
    return getattr(request.app.state, "metrics", None)


SandboxDep = Annotated[SandboxManager | None, Depends(get_sandbox)]
RunnerDep = Annotated[JobRunner | None, Depends(get_runner)]
MetricsDep = Annotated[Metrics | None, Depends(get_metrics)]
