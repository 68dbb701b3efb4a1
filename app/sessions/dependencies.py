"""The session service the lifespan built, for routers (and the MCP tools)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.core.errors import ServiceUnavailableError
from app.sessions.service import SessionService


def get_session_service(request: Request) -> SessionService:
    service = getattr(request.app.state, "sessions", None)
    if service is None:
        raise ServiceUnavailableError("sessions are not available right now")
    return service


SessionServiceDep = Annotated[SessionService, Depends(get_session_service)]
