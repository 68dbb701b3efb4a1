"""Live endpoints: a job's events (SSE) and their tickets, and the WebSocket of interactive runs.

The SSE route is tagged `jobs` (its operation id is `jobs-events`); the WebSocket is not part of
the OpenAPI schema (OpenAPI cannot describe one), its protocol is in app/live/ws.py and the
README.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.auth import repository as users
from app.auth.dependencies import get_current_user, oauth2_scheme, require_permission
from app.auth.models import User
from app.auth.permissions import Permission, has_permission
from app.code.dependencies import get_sync_runs
from app.core.config import Settings
from app.core.deps import SessionDep, SettingsDep
from app.core.error_schemas import error_responses
from app.core.errors import AuthenticationError, AuthorizationError
from app.jobs import repository as jobs
from app.jobs import service as job_service
from app.jobs.schemas import JobRead
from app.live import sse, tickets
from app.live.ws import LiveRunSocket
from app.submissions import repository as submissions
from app.submissions import service as submission_service
from app.submissions.callbacks import RESOURCE, submission_payload
from app.submissions.models import SubmissionStatus

router = APIRouter(tags=["jobs"])
socket_router = APIRouter()

Reader = Annotated[User, Depends(require_permission(Permission.JOBS_READ_OWN))]


class EventsTicket(BaseModel):
    ticket: str
    expires_at: datetime


def _sse_answer(description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answers of an events route: the stream, then the usual errors."""
    stream = {"text/event-stream": {"schema": {"type": "string"}}}
    return {
        200: {"description": description, "content": stream},
        **error_responses(401, 403, 404, 422),
    }


LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        pattern=r"^[0-9]{1,18}$",
        description="resume after this event id (EventSource sends it when it reconnects)",
    ),
]


def _streaming(body: AsyncIterator[bytes]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


def _job_resource(job_id: uuid.UUID) -> str:
    return f"job:{job_id}"


@router.post(
    "/jobs/{job_id}/events/ticket",
    response_model=EventsTicket,
    summary="A short-lived ticket to follow one job's events from a browser's EventSource",
    responses=error_responses(401, 403, 404, 422),
)
def events_ticket(
    job_id: uuid.UUID, user: Reader, session: SessionDep, settings: SettingsDep
) -> EventsTicket:
    """Pass it as `?ticket=` to GET /jobs/{id}/events: it names this job and you, and expires
    after EVENTS_TICKET_TTL_S; an access token never needs to appear in a URL."""
    job_service.get_job(session, user=user, job_id=str(job_id))  # another user's job: 404
    ticket, expires_at = tickets.issue(settings, user_id=user.id, resource=_job_resource(job_id))
    return EventsTicket(ticket=ticket, expires_at=expires_at)


async def events_reader(
    request: Request,
    job_id: uuid.UUID,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    ticket: Annotated[
        str | None,
        Query(max_length=512, description="from POST /jobs/{id}/events/ticket, for EventSource"),
    ] = None,
) -> User:
    """The reader of a job's events: by ticket (EventSource) or by bearer token."""
    return await _events_user(request, settings, token, ticket, _job_resource(job_id))


async def _events_user(
    request: Request,
    settings: Settings,
    token: str | None,
    ticket: str | None,
    resource: str,
) -> User:
    if ticket is None:
        user = await get_current_user(request, settings, token)
    else:
        user_id = tickets.verify(settings, ticket, resource=resource)
        user = await run_in_threadpool(_active_user, request.app.state.session_factory, user_id)
    if not has_permission(user.role, Permission.JOBS_READ_OWN):
        raise AuthorizationError(
            "your role does not allow this",
            details={"missing_permissions": [str(Permission.JOBS_READ_OWN)]},
        )
    return user


def _active_user(session_factory: sessionmaker[Session], user_id: str) -> User:
    with session_factory() as session:
        user = users.get_user(session, user_id)
    if user is None or not user.is_active:
        raise AuthenticationError("this account does not exist or is not active")
    return user


def _job_loader(session_factory: sessionmaker[Session], job_id: str) -> sse.JobLoader:
    def load() -> dict[str, Any] | None:
        with session_factory() as session:
            job = jobs.get(session, job_id)
            return JobRead.from_job(job).model_dump(mode="json") if job is not None else None

    return load


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    summary="Follow a job as Server-Sent Events: status, stdout, stderr, then its result",
    responses=_sse_answer(
        "`text/event-stream`: events `status`, `stdout`, `stderr` and a last `result` "
        "(the job as GET /jobs/{id} shows it); `data` is JSON. Reconnect with "
        "`Last-Event-ID` to get the rest without loss."
    ),
)
async def job_events(
    job_id: uuid.UUID,
    request: Request,
    user: Annotated[User, Depends(events_reader)],
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Authenticate with `Authorization: Bearer`, or with `?ticket=` from POST .../ticket."""
    session_factory = request.app.state.session_factory
    await run_in_threadpool(_check_reader, session_factory, user, str(job_id))
    body = sse.job_events(
        request.app.state.event_log,
        str(job_id),
        after=int(last_event_id or 0),
        load_job=_job_loader(session_factory, str(job_id)),
    )
    return _streaming(body)


def _check_reader(session_factory: sessionmaker[Session], user: User, job_id: str) -> None:
    with session_factory() as session:
        job_service.get_job(session, user=user, job_id=job_id)  # another user's job: 404


@socket_router.websocket("/code/ws")
async def code_ws(websocket: WebSocket) -> None:
    """An interactive run: see app/live/ws.py for the conversation."""
    runs = await get_sync_runs(websocket)  # type: ignore[arg-type]
    await LiveRunSocket(websocket, runs, websocket.app.state.run_event_log).serve()


# --------------------------------------------------------------------------- submissions

submissions_router = APIRouter(tags=["submissions"])


def _submission_resource(submission_id: uuid.UUID) -> str:
    return f"submission:{submission_id}"


@submissions_router.post(
    "/submissions/{submission_id}/events/ticket",
    response_model=EventsTicket,
    summary="A short-lived ticket to follow one submission's events from a browser's EventSource",
    responses=error_responses(401, 403, 404, 422),
)
def submission_events_ticket(
    submission_id: uuid.UUID, user: Reader, session: SessionDep, settings: SettingsDep
) -> EventsTicket:
    """Pass it as `?ticket=` to GET /submissions/{id}/events (see the jobs' ticket)."""
    submission_service.get_submission(session, user=user, submission_id=str(submission_id))
    resource = _submission_resource(submission_id)
    ticket, expires_at = tickets.issue(settings, user_id=user.id, resource=resource)
    return EventsTicket(ticket=ticket, expires_at=expires_at)


async def submission_events_reader(
    request: Request,
    submission_id: uuid.UUID,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    ticket: Annotated[
        str | None,
        Query(
            max_length=512,
            description="from POST /submissions/{id}/events/ticket, for EventSource",
        ),
    ] = None,
) -> User:
    """The reader of a submission's events: by ticket (EventSource) or by bearer token."""
    resource = _submission_resource(submission_id)
    return await _events_user(request, settings, token, ticket, resource)


def _submission_loader(session_factory: sessionmaker[Session], submission_id: str) -> sse.JobLoader:
    def load() -> dict[str, Any] | None:
        with session_factory() as session:
            submission = submissions.get(session, submission_id)
            if submission is None:
                return None
            return submission_payload(session, submission)

    return load


@submissions_router.get(
    "/submissions/{submission_id}/events",
    response_class=StreamingResponse,
    summary="Follow a submission as Server-Sent Events: status, each case, then its result",
    responses=_sse_answer(
        "`text/event-stream`: events `status`, one `case` per graded case (number 0-based, "
        "verdict, time_ms, memory_kb, exit_code, stdout, stderr, truncated) and a last "
        "`result` (the submission as GET /submissions/{id} shows it); `data` is JSON. "
        "Reconnect with `Last-Event-ID` to get the rest without loss."
    ),
)
async def submission_events(
    submission_id: uuid.UUID,
    request: Request,
    user: Annotated[User, Depends(submission_events_reader)],
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Authenticate with `Authorization: Bearer`, or with `?ticket=` from POST .../ticket."""
    session_factory = request.app.state.session_factory
    await run_in_threadpool(_check_submission_reader, session_factory, user, str(submission_id))
    body = sse.resource_events(
        request.app.state.event_log,
        RESOURCE,
        str(submission_id),
        after=int(last_event_id or 0),
        load=_submission_loader(session_factory, str(submission_id)),
        is_final=lambda status: SubmissionStatus(status).is_final,
        queued=SubmissionStatus.QUEUED.value,
    )
    return _streaming(body)


def _check_submission_reader(
    session_factory: sessionmaker[Session], user: User, submission_id: str
) -> None:
    with session_factory() as session:  # another user's submission: 404
        submission_service.get_submission(session, user=user, submission_id=submission_id)
