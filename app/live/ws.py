"""The WebSocket of an interactive run (`/api/v1/code/ws`): the conversation and its checks.

Client -> server, JSON text messages:
- first, within LIVE_FIRST_MESSAGE_TIMEOUT_S: `{"type": "run", "token": "<access token>", ...}`
  with the body `/code/execute` accepts (language, code, stdin, timeout, args, files). The token
  may instead come in an `Authorization: Bearer` header of the handshake (non-browser clients);
- then any number of `{"type": "stdin", "data": "...", "eof": false}` and one optional
  `{"type": "kill"}`.
Server -> client: `{"type": "started", "job_id"}`, then `{"type": "stdout" | "stderr", "data"}`
as the program writes, and last `{"type": "result", ...}` (the shape of /code/execute's answer),
then close 1000. Any refusal is `{"type": "error", "error": {code, message, request_id,
details}}` followed by close code 4000 + the HTTP status the same refusal has elsewhere (4401,
4403, 4413, 4422, 4429, 4503, ...).

Why the token travels in the first message: a browser's WebSocket cannot set headers; a token in
the URL lands in access logs, history and proxies; a subprotocol is a header that proxies log
and the server must echo back. The first message is read before anything else is done, with a
deadline and the same size limit as a request body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from functools import partial
from typing import Any

import anyio
import structlog
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.auth import repository as users
from app.auth.models import Role, User
from app.auth.permissions import Permission, has_permission
from app.auth.security import TokenType, decode_token
from app.code.service import SyncRuns
from app.core.errors import (
    AppError,
    AuthenticationError,
    AuthorizationError,
    PayloadTooLargeError,
    ValidationAppError,
    error_body,
)
from app.events.log import EventLog
from app.jobs.shares import off_loop, take_share
from app.jobs.spec import RunBody, resolve_run
from app.live import runs as live_runs
from app.ratelimit.dependencies import limit_execution

log = structlog.get_logger(__name__)

DELIVER_RETRY_S = 0.01
DRAIN_AFTER_RUN_S = 30.0  # a reader this slow after the run ends is closed on
CLOSE_NORMAL = 1000


def close_code(exc: AppError) -> int:
    return 4000 + int(exc.status_code)


class LiveRunSocket:
    """One WebSocket connection: authenticate, check, run, stream, feed stdin, close."""

    def __init__(self, websocket: WebSocket, runs: SyncRuns, events: EventLog) -> None:
        self.ws = websocket
        self.runs = runs
        self.events = events
        self.settings = runs.settings
        self.request_id = str(uuid.uuid4())
        self.stdin_bytes = 0

    async def serve(self) -> None:
        await self.ws.accept()
        structlog.contextvars.bind_contextvars(request_id=self.request_id)
        try:
            await self._serve()
        except AppError as exc:
            await self._refuse(exc)
        except WebSocketDisconnect:
            pass
        finally:
            structlog.contextvars.unbind_contextvars("request_id")

    async def _serve(self) -> None:
        first = None
        with anyio.move_on_after(self.settings.live_first_message_timeout_s):
            first = await self._receive()
        if first is None:
            raise ValidationAppError("send the run as the first message, in time")
        if first.get("type") != "run":
            raise ValidationAppError('the first message must be {"type": "run", ...}')
        user = await self._authenticate(first.pop("token", None))
        await limit_execution(self.ws, user_id=user.id, is_admin=user.role == Role.ADMIN.value)
        spec = resolve_run(settings=self.settings, manager=self.runs.manager, body=_body(first))
        self.stdin_bytes = len((spec.stdin or "").encode())
        shares = self.runs.shares
        run_timeout_s = spec.timeout_s + self.settings.pool_acquire_timeout_s
        share = await take_share(shares, user.id, run_timeout_s=run_timeout_s)
        try:
            await self._run(user, spec)
        finally:
            await off_loop(shares, shares.release, share)

    async def _authenticate(self, token: Any) -> User:
        header = self.ws.headers.get("authorization", "")
        if not token and header.lower().startswith("bearer "):
            token = header[7:].strip()
        if not isinstance(token, str) or not token:
            raise AuthenticationError('not authenticated: send "token" in the run message')
        claims = decode_token(token, settings=self.settings, expected_type=TokenType.ACCESS)
        user = await run_in_threadpool(self._load_user, claims.sub)
        if user is None or not user.is_active:
            raise AuthenticationError("this account does not exist or is not active")
        if not has_permission(user.role, Permission.EXECUTE_CODE):
            raise AuthorizationError(
                "your role does not allow this",
                details={"missing_permissions": [str(Permission.EXECUTE_CODE)]},
            )
        return user

    def _load_user(self, user_id: str) -> User | None:
        with self.runs.session_factory() as session:
            return users.get_user(session, user_id)

    # ------------------------------------------------------------------ the run

    async def _run(self, user: User, spec: Any) -> None:
        run_id = live_runs.open_run(self.events, self.runs)
        await self.ws.send_json({"type": "started", "job_id": run_id})
        blocking = partial(
            live_runs.run_and_store, self.runs, self.events, run_id=run_id, user_id=user.id,
            spec=spec,
        )  # fmt: skip
        run = asyncio.create_task(self._run_in_slot(run_id, blocking))
        client = asyncio.create_task(self._client_messages(run_id, run))
        sender = asyncio.create_task(self._send_output(run_id))
        try:
            await asyncio.wait({run, client}, return_when=asyncio.FIRST_COMPLETED)
            if client.done():  # the client left or broke the protocol: stop the run first
                await self._deliver(partial(self._cancel, run_id), run)
                await run
                sender.cancel()
                client.result()  # raises what ended it: a refusal, or the disconnect
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(sender), DRAIN_AFTER_RUN_S)
            await self._close(sender)
        finally:
            for task in (client, sender):
                task.cancel()
            self.events.drop(live_runs.RESOURCE, run_id)

    async def _run_in_slot(self, run_id: str, blocking: Any) -> None:
        """Run in a synchronous-run slot; a refusal before or during the run ends the stream
        with an error event instead of a result."""
        try:
            await self.runs.slots.run(blocking)
        except AppError as exc:
            event = live_runs.error_event(exc, self.request_id)
            self.events.finish(live_runs.RESOURCE, run_id, "error", event)
        except Exception:  # never leave the reader waiting for an ending
            log.exception("live_run_failed", job_id=run_id)
            event = live_runs.error_event(AppError(), self.request_id)
            self.events.finish(live_runs.RESOURCE, run_id, "error", event)

    def _cancel(self, run_id: str) -> bool:
        assert self.runs.manager is not None
        return self.runs.manager.cancel(run_id)

    async def _send_output(self, run_id: str) -> dict[str, Any] | None:
        """Send the stream's events in order; returns the last (result or error) event's data.
        A slow reader only lags: what waits for it is the log's, bounded by the output limit."""
        after = 0
        while True:
            replay = self.events.replay(live_runs.RESOURCE, run_id, after)
            for event in replay.events:
                after = event.id
                if event.kind in ("stdout", "stderr"):
                    await self.ws.send_json({"type": event.kind, "data": event.data})
                elif event.kind == "result":
                    await self.ws.send_json({"type": "result", **event.data})
                    return None
                elif event.kind == "error":
                    return dict(event.data)
            if replay.finished or not replay.known:
                return None
            await self.events.wait(live_runs.RESOURCE, run_id, after, 5.0)

    async def _close(self, sender: asyncio.Task) -> None:
        error = None
        if sender.done() and not sender.cancelled() and sender.exception() is None:
            error = sender.result()
        if error is None:
            await self.ws.close(CLOSE_NORMAL)
            return
        await self.ws.send_json({"type": "error", "error": error["error"]})
        await self.ws.close(4000 + int(error["status"]))

    # ------------------------------------------------------------------ what the client sends

    async def _client_messages(self, run_id: str, run: asyncio.Task) -> None:
        """stdin and kill until the run ends; anything else is a refusal that ends the run."""
        while True:
            message = await self._receive()
            kind = message.get("type")
            if kind == "stdin":
                data, eof = message.get("data", ""), message.get("eof", False)
                if not isinstance(data, str) or not isinstance(eof, bool) or set(message) - {
                    "type", "data", "eof",
                }:  # fmt: skip
                    raise ValidationAppError(
                        'stdin messages are {"type": "stdin", "data": "<text>", "eof": false}'
                    )
                self._count_stdin(data)
                send = partial(self._send_stdin, run_id, data, eof)
                await self._deliver(send, run)
            elif kind == "kill":
                await self._deliver(partial(self._cancel, run_id), run)
            else:
                raise ValidationAppError(
                    "unknown message type; send stdin or kill", details={"type": str(kind)[:32]}
                )

    def _send_stdin(self, run_id: str, data: str, eof: bool) -> bool:
        assert self.runs.manager is not None
        return self.runs.manager.send_stdin(run_id, data, eof)

    def _count_stdin(self, data: str) -> None:
        self.stdin_bytes += len(data.encode("utf-8", "replace"))
        limit = self.settings.max_stdin_bytes
        if self.stdin_bytes > limit:
            raise PayloadTooLargeError(
                f"a run's stdin is larger than {limit} bytes in all",
                details={"field": "stdin", "max_bytes": limit},
            )

    async def _deliver(self, attempt: Any, run: asyncio.Task) -> None:
        """Try `attempt` (blocking) until it lands or the run is over: before the run reaches
        its container there is nobody to take it yet."""
        while not run.done():
            if await run_in_threadpool(attempt):
                return
            await asyncio.sleep(DELIVER_RETRY_S)

    async def _receive(self) -> dict[str, Any]:
        """One JSON object, at most MAX_REQUEST_BODY_BYTES (the server refuses far larger ones
        itself, before they are buffered; see app/serve.py)."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            raise ValidationAppError("send JSON text messages, not binary ones")
        limit = self.settings.max_request_body_bytes
        if len(text) > limit or len(text.encode("utf-8", "replace")) > limit:
            raise PayloadTooLargeError(f"a message may be at most {limit} bytes")
        try:
            parsed = json.loads(text)
        except ValueError:
            raise ValidationAppError("the message is not JSON") from None
        if not isinstance(parsed, dict):
            raise ValidationAppError("the message must be a JSON object")
        return parsed

    async def _refuse(self, exc: AppError) -> None:
        body = error_body(exc.code, exc.message, self.request_id, exc.details)
        with contextlib.suppress(Exception):  # the client may have gone already
            await self.ws.send_json({"type": "error", **body})
            await self.ws.close(close_code(exc))


def _body(message: dict[str, Any]) -> RunBody:
    fields = {key: value for key, value in message.items() if key != "type"}
    try:
        return RunBody.model_validate(fields)
    except ValidationError as exc:
        details = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type")}
            for err in exc.errors(include_url=False)
        ]
        raise ValidationAppError("the run is not valid", details=details) from None
