"""The checks a session request must pass before it reaches a sandbox: its limits, a cell's
size and timeout, a file's path and size, and who may see a session."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.models import Role, User
from app.core.config import Settings
from app.core.errors import PayloadTooLargeError, ValidationAppError
from app.sandbox.types import RunRequest
from app.sessions.schemas import CellBody, SessionCreate
from sandbox_images.agent.workspace import WorkspaceError, check_name


@dataclass(frozen=True)
class SessionLimits:
    idle_timeout_s: float
    max_lifetime_s: float


def limits_for(settings: Settings, body: SessionCreate) -> SessionLimits:
    idle = body.idle_timeout_s or settings.session_idle_timeout_s
    lifetime = body.max_lifetime_s or settings.session_max_lifetime_s
    for field, value, most in (
        ("idle_timeout_s", idle, settings.session_idle_timeout_s),
        ("max_lifetime_s", lifetime, settings.session_max_lifetime_s),
    ):
        if value > most:
            raise ValidationAppError(
                f"{field} may be at most {most:g} seconds",
                details={"field": field, "max": most},
            )
    return SessionLimits(idle_timeout_s=min(idle, lifetime), max_lifetime_s=lifetime)


def cell_request(settings: Settings, body: CellBody) -> RunRequest:
    for field, value, most in (
        ("code", body.code, settings.max_code_bytes),
        ("stdin", body.stdin or "", settings.max_stdin_bytes),
    ):
        if len(value.encode("utf-8", "surrogatepass")) > most:
            raise PayloadTooLargeError(
                f"{field} is larger than {most} bytes",
                details={"field": field, "max_bytes": most},
            )
    timeout = settings.run_default_timeout_s if body.timeout is None else body.timeout
    if timeout > settings.run_max_timeout_s:
        raise ValidationAppError(
            f"timeout may be at most {settings.run_max_timeout_s:g} seconds",
            details={"field": "timeout", "max": settings.run_max_timeout_s},
        )
    return RunRequest(
        code=body.code,
        language="python",
        stdin=body.stdin or "",
        timeout_s=float(timeout),
        output_limit_bytes=settings.run_output_limit_bytes,
    )


def check_upload(settings: Settings, path: str, content: bytes) -> None:
    check_path(path)
    if len(content) > settings.session_max_file_bytes:
        raise PayloadTooLargeError(
            f"the file is larger than {settings.session_max_file_bytes} bytes",
            details={"field": "body", "max_bytes": settings.session_max_file_bytes},
        )


def may_see(user: User, owner_id: str) -> bool:
    return owner_id == user.id or user.role == Role.ADMIN.value


def check_path(path: str) -> None:
    try:
        check_name(path)
    except WorkspaceError as exc:
        raise ValidationAppError(
            f"path {path!r} is not a plain relative path inside the session",
            details={"field": "path"},
        ) from exc
