"""The submissions domain's live objects, built in the lifespan and handed to routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.jobs.queue import JobQueue


async def get_submission_queue(request: Request) -> JobQueue | None:
    """None when this process grades nothing (the sandbox is disabled)."""
    return getattr(request.app.state, "submission_queue", None)


SubmissionQueueDep = Annotated[JobQueue | None, Depends(get_submission_queue)]
