"""The versioned API: every domain router mounted under /api/v1, plus the version listing."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.auth.router import router as auth_router
from app.code.router import router as code_router
from app.core.middleware import API_VERSION, SUPPORTED_API_VERSIONS
from app.jobs.router import router as jobs_router
from app.sandbox_api.router import router as sandbox_router
from app.users.router import router as users_router

API_PREFIX = f"/api/{API_VERSION}"


class VersionInfo(BaseModel):
    current: str
    supported: list[str]


version_router = APIRouter(tags=["meta"])


@version_router.get("/api/version", response_model=VersionInfo, summary="API versions")
def api_version() -> VersionInfo:
    return VersionInfo(current=API_VERSION, supported=list(SUPPORTED_API_VERSIONS))


def build_v1_router() -> APIRouter:
    """Each domain owns its router; this is the one place that mounts them."""
    v1 = APIRouter(prefix=API_PREFIX)
    v1.include_router(auth_router)
    v1.include_router(users_router)
    v1.include_router(code_router)
    v1.include_router(jobs_router)
    v1.include_router(sandbox_router)
    return v1
