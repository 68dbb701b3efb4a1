"""Sessions: create, list, read, close; run cells; put, get, list and delete files."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from app.auth.dependencies import execute_rate_limit, require_permission
from app.auth.models import User
from app.auth.permissions import Permission
from app.core.error_schemas import error_responses
from app.sessions.dependencies import SessionServiceDep
from app.sessions.models import SessionStatus
from app.sessions.schemas import (
    CellBody,
    CellResponse,
    SessionCreate,
    SessionFileList,
    SessionFileRead,
    SessionPage,
    SessionRead,
)

router = APIRouter(prefix="/sessions", tags=["sessions"])

Holder = Annotated[User, Depends(require_permission(Permission.EXECUTE_CODE))]
FilePath = Annotated[str, "a relative path inside the session's scratch"]
GONE = (401, 403, 404, 409, 410, 422)


@router.post(
    "",
    response_model=SessionRead,
    status_code=HTTPStatus.CREATED,
    summary="Open a session: a warm sandbox whose Python keeps state between cells",
    dependencies=[Depends(execute_rate_limit)],
    responses=error_responses(400, 401, 403, 413, 415, 422, 429, 503),
)
async def create_session(
    body: SessionCreate, user: Holder, service: SessionServiceDep, request: Request,
    response: Response,
) -> SessionRead:  # fmt: skip
    created = await service.create(user, body)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{created.session_id}"
    return created


@router.get(
    "",
    response_model=SessionPage,
    summary="List sessions, newest first (admins: every user's)",
    responses=error_responses(401, 403, 422),
)
async def list_sessions(
    user: Holder,
    service: SessionServiceDep,
    status: SessionStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SessionPage:
    items, total = await service.list(user, status=status, limit=limit, offset=offset)
    return SessionPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/{session_id}",
    response_model=SessionRead,
    summary="One open session (an ended one is 410 SESSION_GONE)",
    responses=error_responses(401, 403, 404, 410, 422),
)
async def read_session(
    session_id: uuid.UUID, user: Holder, service: SessionServiceDep
) -> SessionRead:
    return await service.read(user, str(session_id))


@router.delete(
    "/{session_id}",
    status_code=HTTPStatus.NO_CONTENT,
    summary="Close a session: its sandbox is wiped and proven clean before anyone reuses it",
    responses=error_responses(401, 403, 404, 410, 422),
)
async def close_session(session_id: uuid.UUID, user: Holder, service: SessionServiceDep) -> None:
    await service.close(user, str(session_id))


@router.post(
    "/{session_id}/execute",
    response_model=CellResponse,
    summary="Run a cell in the session; variables, imports and files persist",
    dependencies=[Depends(execute_rate_limit)],
    responses=error_responses(401, 403, 404, 409, 410, 413, 415, 422, 429, 503),
)
async def execute(
    session_id: uuid.UUID, body: CellBody, user: Holder, service: SessionServiceDep
) -> CellResponse:
    """200 for any cell that ran, whatever it did. `interrupted`: it timed out and was stopped
    with its state kept; `restarted`: the interpreter had to be replaced and the session's
    variables are lost. A second cell while one runs is 409 SESSION_BUSY."""
    return await service.execute(user, str(session_id), body)


@router.get(
    "/{session_id}/files",
    response_model=SessionFileList,
    summary="List the files in the session's scratch",
    responses=error_responses(*GONE),
)
async def list_files(
    session_id: uuid.UUID, user: Holder, service: SessionServiceDep
) -> SessionFileList:
    files = await service.list_files(user, str(session_id))
    return SessionFileList(
        files=[SessionFileRead(path=item.path, size_bytes=item.size_bytes) for item in files]
    )


@router.put(
    "/{session_id}/files/{path:path}",
    response_model=SessionFileRead,
    summary="Upload a file (the raw body) into the session's scratch",
    responses=error_responses(400, *GONE, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def put_file(
    session_id: uuid.UUID, path: FilePath, request: Request, user: Holder,
    service: SessionServiceDep,
) -> SessionFileRead:  # fmt: skip
    content = await request.body()
    size = await service.put_file(user, str(session_id), path, content)
    return SessionFileRead(path=path, size_bytes=size)


@router.get(
    "/{session_id}/files/{path:path}",
    summary="Download a file from the session's scratch",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}},
        **error_responses(400, *GONE),
    },
)
async def get_file(
    session_id: uuid.UUID, path: FilePath, user: Holder, service: SessionServiceDep
) -> Response:
    content = await service.get_file(user, str(session_id), path)
    return Response(content, media_type="application/octet-stream")


@router.delete(
    "/{session_id}/files/{path:path}",
    status_code=HTTPStatus.NO_CONTENT,
    summary="Remove a file from the session's scratch",
    responses=error_responses(400, *GONE),
)
async def delete_file(
    session_id: uuid.UUID, path: FilePath, user: Holder, service: SessionServiceDep
) -> None:
    await service.delete_file(user, str(session_id), path)
