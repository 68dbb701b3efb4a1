"""`GET /languages` for everyone signed in, `GET /sandbox/pool/stats` for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import require_permission
from app.auth.models import User
from app.auth.permissions import Permission
from app.core.deps import SessionDep
from app.core.error_schemas import error_responses
from app.jobs import service
from app.jobs.dependencies import JobQueueDep
from app.sandbox.dependencies import SandboxDep
from app.sandbox.languages import LANGUAGES
from app.sandbox_api.schemas import LanguageInfo, LanguageList, PoolStatsReport, QueueStats

router = APIRouter(tags=["sandbox"])

LanguageReader = Annotated[User, Depends(require_permission(Permission.LANGUAGES_READ))]
StatsReader = Annotated[User, Depends(require_permission(Permission.POOL_READ_STATS))]


@router.get(
    "/languages",
    response_model=LanguageList,
    summary="Languages this server can run, with their versions",
    responses=error_responses(401, 403),
)
async def list_languages(_user: LanguageReader, sandbox: SandboxDep) -> LanguageList:
    if sandbox is None:
        entries = [
            LanguageInfo(
                name=name,
                display_name=lang.display_name,
                version=None,
                compiled=bool(getattr(lang, "compiled", False)),
                file_name=lang.file_name,
                available=False,
                warm=False,
            )
            for name, lang in LANGUAGES.items()
        ]
    else:
        entries = [LanguageInfo.model_validate(entry) for entry in sandbox.languages()]
    return LanguageList(languages=entries)


@router.get(
    "/sandbox/pool/stats",
    response_model=PoolStatsReport,
    summary="Pool, queue and per-language figures (admin)",
    responses=error_responses(401, 403),
)
async def pool_stats(
    _admin: StatsReader, session: SessionDep, sandbox: SandboxDep, queue: JobQueueDep
) -> PoolStatsReport:
    pools = await run_in_threadpool(sandbox.stats) if sandbox is not None else {}
    budget = await run_in_threadpool(sandbox.budget_stats) if sandbox is not None else {}
    by_language = await run_in_threadpool(service.active_counts_by_language, session)
    if queue is not None:
        queue_stats = QueueStats(**queue.stats())
    else:
        queue_stats = QueueStats(
            depth=0,
            capacity=0,
            workers=0,
            running=0,
            users_waiting=0,
            accepting=False,
            expected_wait=0.0,
        )
    return PoolStatsReport(
        sandbox_enabled=sandbox is not None,
        pools=pools,
        budget=budget,
        queue=queue_stats,
        jobs_by_language=by_language,
    )
