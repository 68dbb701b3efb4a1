"""The versioned API: every domain router mounted under /api/v1, plus the version listing.

Also names every operation for generated clients (`operation_id`): clients call
`code_execute(...)` or `jobs.submit(...)`, never `execute_api_v1_code_execute_post`.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute
from fastapi.utils import generate_unique_id
from pydantic import BaseModel

from app.auth.router import router as auth_router
from app.code.router import router as code_router
from app.core.middleware import API_VERSION, SUPPORTED_API_VERSIONS
from app.jobs.router import router as jobs_router
from app.live.router import router as live_router
from app.live.router import socket_router as live_socket_router
from app.live.router import submissions_router as live_submissions_router
from app.sandbox_api.router import router as sandbox_router
from app.sessions.router import router as sessions_router
from app.submissions.router import router as submissions_router
from app.users.router import router as users_router

API_PREFIX = f"/api/{API_VERSION}"


def operation_id(route: APIRoute) -> str:
    """`jobs-submit`, `users-read-me`: the route's one tag, then its handler's name without the
    tag's noun (`submit_job` in `jobs`).

    Generated clients name their functions and modules after these ids, so they must stay stable
    when a path or a handler moves, be unique, and be short. A route without exactly one tag keeps
    FastAPI's long default id; tests/api/test_operation_ids.py refuses that for the public schema.
    """
    if len(route.tags) != 1:
        return generate_unique_id(route)
    tag = str(route.tags[0])
    nouns = {tag, tag.removesuffix("s")}
    words = [word for word in route.name.split("_") if word not in nouns]
    return "-".join([tag, *(words or route.name.split("_"))])


class VersionInfo(BaseModel):
    current: str
    supported: list[str]


version_router = APIRouter(tags=["meta"], generate_unique_id_function=operation_id)


@version_router.get("/api/version", response_model=VersionInfo, summary="API versions")
def api_version() -> VersionInfo:
    return VersionInfo(current=API_VERSION, supported=list(SUPPORTED_API_VERSIONS))


def build_v1_router() -> APIRouter:
    """Each domain owns its router; this is the one place that mounts them."""
    v1 = APIRouter(prefix=API_PREFIX, generate_unique_id_function=operation_id)
    v1.include_router(auth_router)
    v1.include_router(users_router)
    v1.include_router(code_router)
    v1.include_router(jobs_router)
    v1.include_router(submissions_router)
    v1.include_router(live_router)
    v1.include_router(live_socket_router)
    v1.include_router(live_submissions_router)
    v1.include_router(sandbox_router)
    v1.include_router(sessions_router)
    return v1
