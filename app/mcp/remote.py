"""MCP session tools for a session another node holds (issue 14): the same REST call the caller
could make, sent to the owner's NODE_URL with the caller's own bearer token.

The MCP endpoint is stateless, so any node answers any tool call; the REST API forwards in its
middleware (app/sessions/forwarding.py), and the tools, which call the service directly, do it
here. The owner authenticates, checks and counts the call as its own REST request.
"""

from __future__ import annotations

from typing import Any

import httpx
from mcp.server.mcpserver.exceptions import ToolError
from starlette.requests import Request

from app.core.errors import ErrorCode
from app.sessions.directory import SessionOwner
from app.sessions.forwarding import CONNECT_TIMEOUT_S, FORWARDED_BY

SESSIONS_PATH = "/api/v1/sessions"


async def on_owner(
    request: Request, owner: SessionOwner, method: str, path: str, **send: Any
) -> httpx.Response:
    """`method` `/api/v1/sessions/<path>` on the owner; its refusal as a tool error.

    Raises:
        ToolError: the owner refused (its code and message) or did not answer (SESSION_GONE).
    """
    settings = request.app.state.settings
    headers = {
        "Authorization": request.headers.get("authorization", ""),
        FORWARDED_BY: settings.effective_node_id,
    }
    timeout = httpx.Timeout(settings.run_max_timeout_s + 30.0, connect=CONNECT_TIMEOUT_S)
    try:
        async with httpx.AsyncClient(base_url=owner.url, timeout=timeout) as client:
            response = await client.request(
                method, f"{SESSIONS_PATH}/{path}", headers=headers, **send
            )
    except httpx.HTTPError as exc:
        raise ToolError(
            f"{ErrorCode.SESSION_GONE}: the node that holds this session did not answer"
        ) from exc
    if response.is_error:
        error = _error_of(response)
        raise ToolError(f"{error.get('code', 'ERROR')}: {error.get('message', response.text)}")
    return response


def _error_of(response: httpx.Response) -> dict[str, Any]:
    try:
        return dict(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return {}
