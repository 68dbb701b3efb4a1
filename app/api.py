"""The versioned API: every domain router mounted under /api/v1, plus the version listing."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.core.middleware import API_VERSION, SUPPORTED_API_VERSIONS

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
    return v1  # noqa: RET504  (domain routers are included here as they land)
