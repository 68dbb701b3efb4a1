"""Liveness and readiness.

`/health` answers without touching anything, so a load balancer can call it as often as it likes.
`/health/ready` checks each dependency with its own deadline, so a dead database makes the answer
`unhealthy` in about a second instead of hanging the probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app import __version__
from app.core.db import ping
from app.core.errors import AppError

if TYPE_CHECKING:
    from app.sandbox.manager import SandboxManager

CHECK_DEADLINE_S = 2.0
Status = Literal["healthy", "degraded", "unhealthy"]

router = APIRouter(tags=["health"])


class CheckResult(BaseModel):
    status: Status
    latency_ms: float | None = None
    detail: str | None = None
    data: dict[str, Any] | None = None


class ReadinessReport(BaseModel):
    status: Status
    version: str
    checks: dict[str, CheckResult]


class Liveness(BaseModel):
    status: Literal["ok"]
    version: str


async def _timed_check(fn: Callable[[], CheckResult]) -> CheckResult:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(asyncio.to_thread(fn), CHECK_DEADLINE_S)
    except TimeoutError:
        return CheckResult(status="unhealthy", detail=f"no answer within {CHECK_DEADLINE_S}s")
    except AppError as exc:  # our own errors carry a message that is safe to show
        return CheckResult(status="unhealthy", detail=exc.message)
    except Exception as exc:  # a failing check is an answer, not an error
        return CheckResult(status="unhealthy", detail=type(exc).__name__)
    if result.latency_ms is None:
        result.latency_ms = round((time.perf_counter() - started) * 1000, 2)
    return result


def _database_check(request: Request) -> Callable[[], CheckResult]:
    def check() -> CheckResult:
        latency = ping(request.app.state.db_engine)
        return CheckResult(status="healthy", latency_ms=round(latency, 2))

    return check


def _docker_check(sandbox: SandboxManager) -> Callable[[], CheckResult]:
    """The Docker engines: with SANDBOX_ENGINES, degraded while one is down or lacks an image
    (the node serves on the others), unhealthy when none answers."""

    def check() -> CheckResult:
        health = sandbox.engines_health()
        latency = health.data.pop("latency_ms", None)
        return CheckResult(
            status=health.status,
            latency_ms=latency,
            detail=None if health.detail == "ok" else health.detail,
            data=health.data or None,
        )

    return check


def _pool_check(sandbox: SandboxManager) -> Callable[[], CheckResult]:
    def check() -> CheckResult:
        health = sandbox.health()
        return CheckResult(status=health.status, detail=health.detail, data=health.data)

    return check


def _worst(statuses: list[Status]) -> Status:
    for level in ("unhealthy", "degraded"):
        if level in statuses:
            return level  # type: ignore[return-value]
    return "healthy"


@router.get("/health", response_model=Liveness, summary="Liveness: the process answers")
async def health() -> Liveness:
    return Liveness(status="ok", version=__version__)


@router.get(
    "/health/ready",
    response_model=ReadinessReport,
    summary="Readiness: database, Docker engine and sandbox pool",
    responses={503: {"model": ReadinessReport, "description": "a dependency is unhealthy"}},
)
async def ready(request: Request) -> JSONResponse:
    checks: dict[str, CheckResult] = {"database": await _timed_check(_database_check(request))}
    sandbox = request.app.state.sandbox
    if sandbox is not None:
        checks["docker"] = await _timed_check(_docker_check(sandbox))
        checks["pool"] = await _timed_check(_pool_check(sandbox))
    status = _worst([check.status for check in checks.values()])
    report = ReadinessReport(status=status, version=__version__, checks=checks)
    return JSONResponse(report.model_dump(), status_code=503 if status == "unhealthy" else 200)
