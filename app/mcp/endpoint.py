"""`/mcp`: the bearer token is checked here, then the MCP SDK's streamable HTTP handler runs.

The SDK serves stateless (every POST stands alone, no MCP session id), so any node can answer
any request (issue 14); a warmbox *session* is a tool argument, not an MCP session. The SDK's
own OAuth machinery is not used: the same access tokens as the REST API are, checked exactly as
`get_current_user` checks them, and a refusal has the service's error shape.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from app.auth import repository
from app.auth.models import User
from app.auth.security import TokenType, decode_token
from app.core.errors import AppError, AuthenticationError, ErrorCode
from app.core.middleware import error_response

SCOPE_USER = "mcp_user"  # where the endpoint leaves the caller for the tools


class McpEndpoint:
    """An ASGI app for the /mcp route: authenticate, then hand the request to the SDK."""

    def __init__(self, server: MCPServer) -> None:
        self.server = server
        # Bearer tokens, not cookies: a page on another origin cannot make a browser send one,
        # which is what the SDK's DNS-rebinding check guards against for unauthenticated servers.
        server.streamable_http_app(
            streamable_http_path="/mcp",
            stateless_http=True,
            json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    def running(self) -> AbstractAsyncContextManager[None]:
        """Enter in the lifespan: the SDK's task group lives as long as the app."""
        return self.server.session_manager.run()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            user = await _authenticate(scope)
        except AppError as exc:
            code = ErrorCode(exc.code)
            response = error_response(
                scope, exc.status_code, code, exc.message, headers=exc.headers
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})[SCOPE_USER] = user
        scope["state"]["user_id"] = user.id  # for the access log
        await self.server.session_manager.handle_request(scope, receive, send)


async def _authenticate(scope: Scope) -> User:
    authorization = Headers(scope=scope).get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("not authenticated: send 'Authorization: Bearer <access token>'")
    app: Any = scope["app"]
    settings = app.state.settings
    claims = decode_token(token.strip(), settings=settings, expected_type=TokenType.ACCESS)
    user = await run_in_threadpool(_load_user, app.state.session_factory, claims.sub)
    if user is None or not user.is_active:
        raise AuthenticationError("this account does not exist or is not active")
    return user


def _load_user(factory: Any, user_id: str) -> User | None:
    with factory() as db:  # a read: closing detaches the user with its attributes loaded
        return repository.get_user(db, user_id)
