"""The jobs domain's live objects, built in the lifespan and handed to routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.jobs.queue import JobQueue


async def get_job_queue(request: Request) -> JobQueue | None:
    """None when this process runs no job workers (the sandbox is disabled)."""
    return getattr(request.app.state, "job_queue", None)


JobQueueDep = Annotated[JobQueue | None, Depends(get_job_queue)]
