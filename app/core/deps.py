"""`Annotated` dependency aliases shared by every router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import session_scope


async def get_settings_dep(request: Request) -> Settings:
    """Async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a hop that
    costs every request a thread wake-up each way for a dictionary lookup."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: committed when the handler returns, rolled back when it raises."""
    yield from session_scope(request.app.state.session_factory)


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
# scope="function": the commit runs when the handler returns and before the response is sent, so
# a 2xx means the write is durable and visible to the next request, and a failed commit becomes
# an error response (503 for OperationalError) instead of a log line after a 2xx.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
