"""Send a session request that reached a node which does not hold the session to the one that
does (issue 14), over the internal network (NODE_URL), and stream its answer back.

Forwarding rather than load-balancer affinity: any load balancer works unchanged (affinity would
need one that can route on a path segment, and a cookie or a hash cannot name the node that
happened to lend the container); a session's id stays an opaque UUID; and a node's death is
seen by the node that received the request, which answers 410 SESSION_GONE itself. The cost is
one extra loopback-or-LAN hop for the requests that land elsewhere (on N nodes, (N-1)/N of them
with a round-robin balancer); a cell's own time is unchanged.

The middleware sits outside rate limiting and the body checks: the owner counts, checks and
answers the request once, as if the caller had reached it directly (the caller's own
Authorization travels with it; nothing here trusts or grants anything). A forwarded request is
marked (`X-Warmbox-Forwarded-By`) and a marked request is never forwarded again, so a stale or
forged mark can only make a node answer from what it holds itself: no loop, no bypass. Requests
without an Authorization header are not forwarded (the local node refuses them as the owner
would). When the owner does not accept the connection the request is served locally, where
authentication runs and the service answers 410 for a session whose node is gone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import httpx
import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import Settings
from app.core.errors import ErrorCode, ServiceUnavailableError
from app.core.middleware import error_response
from app.sessions.directory import SessionOwner

log = structlog.get_logger(__name__)

FORWARDED_BY = "x-warmbox-forwarded-by"
_SESSION_PATH = re.compile(r"^/api/v1/sessions/([^/]+)(?:/|$)")
# Not passed on: hop-by-hop headers, and what each side's outer middleware stamps itself.
_REQUEST_DROPPED = {"host", "connection", "keep-alive", "te", "upgrade", "transfer-encoding",
                    "proxy-authorization", FORWARDED_BY}  # fmt: skip
_RESPONSE_DROPPED = {"connection", "keep-alive", "transfer-encoding", "date", "server",
                     "x-request-id", "x-api-version"}  # fmt: skip
CONNECT_TIMEOUT_S = 2.0


class SessionForwardingMiddleware:
    """Forward `/api/v1/sessions/{id}...` to the node the session directory names."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.node_id = settings.effective_node_id
        self.timeout = httpx.Timeout(
            connect=CONNECT_TIMEOUT_S,
            read=settings.run_max_timeout_s + 30.0,  # the longest cell, and its kernel restart
            write=30.0,
            pool=10.0,
        )
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner = await self._owner(scope) if scope["type"] == "http" else None
        if owner is None:
            await self.app(scope, receive, send)
            return
        body = _Body(receive)
        try:
            await self._forward(owner, scope, body, send)
        except httpx.HTTPError as exc:
            if body.answering:
                raise  # the answer began: only dropping the connection tells the caller
            if body.started:  # part of the request is gone: it cannot be served here
                log.warning("session_forward_failed", node=owner.node_id, error=repr(exc))
                await error_response(
                    scope,
                    410,
                    ErrorCode.SESSION_GONE,
                    "the node that holds this session stopped answering",
                    details={"end_reason": "owner_unreachable", "node_id": owner.node_id},
                )(scope, receive, send)
                return
            # The owner never took the request: serve it here, where authentication runs
            # and the service answers 410 for a session whose node is gone.
            log.warning("session_owner_unreachable", node=owner.node_id, error=repr(exc))
            await self.app(scope, receive, send)

    async def _owner(self, scope: Scope) -> SessionOwner | None:
        """The other node to send this request to, or None to serve it here."""
        match = _SESSION_PATH.match(scope["path"])
        if match is None:
            return None
        headers = Headers(scope=scope)
        if FORWARDED_BY in headers or "authorization" not in headers:
            return None
        try:
            session_id = str(uuid.UUID(match.group(1)))
        except ValueError:
            return None  # the router answers 422
        sessions = getattr(scope["app"].state, "sessions", None)
        if sessions is None:
            return None
        try:
            return await sessions.locate(session_id)
        except ServiceUnavailableError:
            return None  # the service answers 503 once it has checked who is asking

    async def _forward(self, owner: SessionOwner, scope: Scope, body: _Body, send: Send) -> None:
        client = self._http()
        request = client.build_request(
            scope["method"],
            _target(owner, scope),
            headers=self._headers(scope),
            content=body if _has_body(scope) else None,
        )
        response = await client.send(request, stream=True)
        try:
            body.answering = True
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (name, value)
                        for name, value in response.headers.raw
                        if name.decode("latin-1").lower() not in _RESPONSE_DROPPED
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    def _headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name.decode("latin-1").lower() not in _REQUEST_DROPPED
        ]
        headers.append((FORWARDED_BY.encode(), self.node_id.encode()))
        request_id = scope.get("state", {}).get("request_id")
        if request_id:  # one id for the request on both nodes' logs
            headers = [(n, v) for n, v in headers if n.lower() != b"x-request-id"]
            headers.append((b"x-request-id", request_id.encode()))
        client = scope.get("client")
        if client:
            forwarded_for = Headers(scope=scope).get("x-forwarded-for")
            chain = f"{forwarded_for}, {client[0]}" if forwarded_for else client[0]
            headers = [(n, v) for n, v in headers if n.lower() != b"x-forwarded-for"]
            headers.append((b"x-forwarded-for", chain.encode("latin-1")))
        return headers

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self._client


def _target(owner: SessionOwner, scope: Scope) -> str:
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    target = owner.url + path.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


def _has_body(scope: Scope) -> bool:
    return scope["method"] in ("POST", "PUT", "PATCH")


class _Body:
    """The caller's body as it arrives, never buffered whole; `started` once a part of it has
    been read (a failure after that cannot fall back to serving the request here)."""

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.started = False
        self.answering = False  # the owner's answer is being passed on

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.started = True
            message: Message = await self.receive()
            if message["type"] == "http.disconnect":
                raise httpx.ReadError("the caller went away")
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return
