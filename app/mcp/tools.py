"""The MCP tools: thin adapters over the same services the REST API calls, so a tool obeys the
same permissions, rate limits, shares and limits, and refuses with the same codes."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request

from app import __version__
from app.auth.models import Role, User
from app.auth.permissions import Permission, has_permission
from app.code import service as code_service
from app.code.dependencies import get_sync_runs
from app.core.errors import AppError, AuthorizationError, ServiceUnavailableError
from app.jobs.spec import RunBody
from app.mcp.endpoint import SCOPE_USER
from app.mcp.remote import on_owner
from app.ratelimit.dependencies import limit_execution
from app.sessions.directory import SessionOwner
from app.sessions.errors import SessionElsewhereError
from app.sessions.schemas import CellBody, CellResponse, SessionCreate
from app.sessions.service import SessionService

Encoding = Literal["utf8", "base64"]
Elsewhere = Callable[[SessionOwner], Awaitable[Any]]


def build_server() -> MCPServer:
    server = MCPServer(
        name="warmbox",
        version=__version__,
        instructions=(
            "Run code in hardened, pre-warmed sandboxes. run_code runs a program once; "
            "create_session gives a Python interpreter that keeps variables, imports and files "
            "between execute_in_session calls (and returns matplotlib figures as PNG); "
            "close_session when done."
        ),
    )
    for tool in (
        list_languages,
        run_code,
        create_session,
        execute_in_session,
        upload_file,
        read_file,
        close_session,
    ):
        server.tool()(tool)
    return server


async def list_languages(ctx: Context) -> list[dict[str, Any]]:
    """The languages this server runs: name, version, whether it compiles, default file name."""
    request, _user = _caller(ctx, Permission.LANGUAGES_READ)
    manager = request.app.state.sandbox
    if manager is None:
        raise ToolError("SERVICE_UNAVAILABLE: code execution is disabled on this server")
    return manager.languages()


async def run_code(
    code: str,
    ctx: Context,
    language: str = "python",
    stdin: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109  (the run's limit, named as in the REST body)
) -> dict[str, Any]:
    """Run a program once in a fresh sandbox and return its output, exit code and usage."""
    request, user = await _executor(ctx)
    body = _checked(RunBody, code=code, language=language, stdin=stdin, timeout=timeout)
    runs = await get_sync_runs(request)
    return (await _call(code_service.execute(runs, user_id=user.id, body=body))).model_dump()


async def create_session(
    ctx: Context,
    language: str = "python",
    idle_timeout_s: float | None = None,
    max_lifetime_s: float | None = None,
) -> dict[str, Any]:
    """Open a Python session; returns its session_id for execute_in_session and the file tools."""
    request, user = await _executor(ctx)
    body = _checked(
        SessionCreate,
        language=language,
        idle_timeout_s=idle_timeout_s,
        max_lifetime_s=max_lifetime_s,
    )
    created = await _call(_sessions(request).create(user, body))
    return created.model_dump(mode="json")


async def execute_in_session(
    session_id: str,
    code: str,
    ctx: Context,
    stdin: str | None = None,
    timeout: float | None = None,  # noqa: ASYNC109  (the run's limit, named as in the REST body)
) -> dict[str, Any]:
    """Run a cell in the session: its output, and every matplotlib figure it made (PNG,
    base64). `restarted: true` means the interpreter was replaced and its state lost."""
    request, user = await _executor(ctx)
    body = _checked(CellBody, code=code, stdin=stdin, timeout=timeout)
    service = _sessions(request)

    async def elsewhere(owner: SessionOwner) -> Any:
        json = body.model_dump(exclude_none=True)
        sent = await on_owner(request, owner, "POST", f"{session_id}/execute", json=json)
        return CellResponse.model_validate(sent.json())

    result = await _call(service.execute(user, session_id, body), elsewhere)
    return result.model_dump(mode="json")


async def upload_file(
    session_id: str, path: str, content: str, ctx: Context, encoding: Encoding = "utf8"
) -> dict[str, Any]:
    """Write a file into the session's scratch (`content` as text, or base64 bytes)."""
    request, user = _caller(ctx, Permission.EXECUTE_CODE)
    data = _decode(content, encoding)
    service = _sessions(request)

    async def elsewhere(owner: SessionOwner) -> int:
        sent = await on_owner(request, owner, "PUT", f"{session_id}/files/{path}", content=data)
        return int(sent.json()["size_bytes"])

    size = await _call(service.put_file(user, session_id, path, data), elsewhere)
    return {"path": path, "size_bytes": size}


async def read_file(
    session_id: str, path: str, ctx: Context, encoding: Encoding = "utf8"
) -> dict[str, Any]:
    """Read a file from the session's scratch, as text (utf8) or base64."""
    request, user = _caller(ctx, Permission.EXECUTE_CODE)
    service = _sessions(request)

    async def elsewhere(owner: SessionOwner) -> bytes:
        return (await on_owner(request, owner, "GET", f"{session_id}/files/{path}")).content

    data = await _call(service.get_file(user, session_id, path), elsewhere)
    if encoding == "utf8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ToolError("VALIDATION_ERROR: the file is not UTF-8; ask for base64") from exc
    else:
        text = base64.b64encode(data).decode()
    return {"path": path, "encoding": encoding, "content": text, "size_bytes": len(data)}


async def close_session(session_id: str, ctx: Context) -> dict[str, Any]:
    """End the session; its sandbox is wiped and proven clean before anyone reuses it."""
    request, user = _caller(ctx, Permission.EXECUTE_CODE)
    service = _sessions(request)

    async def elsewhere(owner: SessionOwner) -> None:
        await on_owner(request, owner, "DELETE", session_id)

    await _call(service.close(user, session_id), elsewhere)
    return {"session_id": session_id, "closed": True}


# --------------------------------------------------------------------------- helpers


def _caller(ctx: Context, permission: Permission) -> tuple[Request, User]:
    request = ctx.request_context.request
    user = request.scope.get("state", {}).get(SCOPE_USER) if request is not None else None
    if request is None or user is None:
        raise ToolError("AUTHENTICATION_ERROR: no authenticated caller")
    if not has_permission(user.role, permission):
        raise ToolError(f"{AuthorizationError.code}: your role does not allow this")
    return request, user


async def _executor(ctx: Context) -> tuple[Request, User]:
    """A caller allowed to run code, counted against RATE_LIMIT_EXECUTE like the REST API."""
    request, user = _caller(ctx, Permission.EXECUTE_CODE)
    await _call(limit_execution(request, user_id=user.id, is_admin=user.role == Role.ADMIN.value))
    return request, user


def _sessions(request: Request) -> SessionService:
    service = getattr(request.app.state, "sessions", None)
    if service is None:
        raise ToolError(f"{ServiceUnavailableError.code}: sessions are not available")
    return service


async def _call(awaitable: Any, elsewhere: Elsewhere | None = None) -> Any:
    """The service's refusals as tool errors that carry the same code as the REST answer; a
    session another live node holds is asked there (`elsewhere`)."""
    try:
        return await awaitable
    except SessionElsewhereError as exc:
        if elsewhere is None:
            raise ToolError(f"{exc.code}: {exc.message}") from exc
        return await elsewhere(exc.owner)
    except AppError as exc:
        raise ToolError(f"{exc.code}: {exc.message}") from exc


def _checked(model: Any, **fields: Any) -> Any:
    values = {name: value for name, value in fields.items() if value is not None}
    try:
        return model(**values)
    except ValueError as exc:
        raise ToolError(f"VALIDATION_ERROR: {exc}") from exc


def _decode(content: str, encoding: Encoding) -> bytes:
    if encoding == "utf8":
        return content.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ToolError("VALIDATION_ERROR: content is not base64") from exc
