"""`POST /code/execute`: run code now and answer with its result (stored as a finished job)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.auth.dependencies import execute_rate_limit, require_permission
from app.auth.models import User
from app.auth.permissions import Permission
from app.code import service
from app.code.dependencies import SyncRunsDep
from app.code.schemas import ExecutionResult
from app.core.error_schemas import error_responses
from app.jobs.spec import RunBody

router = APIRouter(prefix="/code", tags=["code"])

Executor = Annotated[User, Depends(require_permission(Permission.EXECUTE_CODE))]


@router.post(
    "/execute",
    response_model=ExecutionResult,
    summary="Run code now and return its output",
    dependencies=[Depends(execute_rate_limit)],
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503),
)
async def execute(body: RunBody, user: Executor, sync_runs: SyncRunsDep) -> ExecutionResult:
    """200 for any run that happened, whatever the script did; `success` is exit code 0 without
    a timeout. A run the sandbox could not make is a 503 (and is still recorded as a failed job)."""
    return await service.execute(sync_runs, user_id=user.id, body=body)
