"""A container lent out of the pool as a session (issue 13): cells that keep state, files in its
scratch, and the way back to the pool through the proof of clean.

The pool lends the container (`ContainerPool.lend`) and takes it back (`take_back`); this class
is what a session's owner holds in between. It talks to the agent with the session frames of
`sandbox_images/agent/protocol.py` and never touches Docker itself. All calls block (the agent
answers over the container's socket): callers run them off the event loop, one at a time.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.errors import AppError, ErrorCode, SandboxError
from app.sandbox.types import RunRequest, RunResult

if TYPE_CHECKING:
    from app.sandbox.container import SandboxContainer
    from app.sandbox.pool import ContainerPool

BUSY_WAIT_S = 30.0


class SessionFileError(AppError):
    """The agent refused a file operation (bad path, too large, too many, missing)."""

    status_code = 400
    code = ErrorCode.VALIDATION_ERROR
    default_message = "the file operation was refused"


class SessionFileNotFoundError(SessionFileError):
    status_code = 404
    code = ErrorCode.NOT_FOUND


@dataclass(frozen=True)
class Artifact:
    """A figure a cell produced: PNG bytes and their pixel size."""

    mime_type: str
    data_base64: str
    width: int
    height: int
    size_bytes: int


@dataclass(frozen=True)
class CellResult:
    run: RunResult
    artifacts: tuple[Artifact, ...]
    artifacts_dropped: int
    interrupted: bool  # the cell timed out and SIGINT brought the kernel back
    restarted: bool  # the kernel was replaced: every variable of the session is lost


@dataclass(frozen=True)
class SessionFile:
    path: str
    size_bytes: int


class SandboxSession:
    """One lent container with its session kernel; `close` gives it back to its pool."""

    def __init__(self, pool: ContainerPool, container: SandboxContainer) -> None:
        self.pool = pool
        self.container = container
        self.language = pool.name
        self._lock = threading.Lock()
        self._closed = False

    @property
    def alive(self) -> bool:
        return not self._closed and not self.container.dead

    def execute(self, request: RunRequest) -> CellResult:
        """Run one cell.

        Raises:
            SandboxError: the container failed (the session cannot continue: close it).
        """
        with self._exclusive():
            result, extras = self.container.run_cell(request)
        return CellResult(
            run=result,
            artifacts=tuple(_artifact(item) for item in extras.get("artifacts") or []),
            artifacts_dropped=int(extras.get("artifacts_dropped") or 0),
            interrupted=bool(extras.get("interrupted")),
            restarted=bool(extras.get("restarted")),
        )

    def put_file(self, path: str, content: bytes) -> None:
        content_b64 = base64.b64encode(content).decode()
        self._file({"op": "put", "path": path, "content": content_b64})

    def get_file(self, path: str) -> bytes:
        answer = self._file({"op": "get", "path": path})
        return base64.b64decode(str(answer.get("content") or ""))

    def delete_file(self, path: str) -> None:
        self._file({"op": "delete", "path": path})

    def list_files(self) -> list[SessionFile]:
        answer = self._file({"op": "list"})
        return [
            SessionFile(path=str(item.get("path")), size_bytes=int(item.get("size") or 0))
            for item in answer.get("files") or []
            if isinstance(item, dict)
        ]

    def close(self) -> None:
        """End the session: the container goes back to its pool only once proven clean."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.pool.take_back(self.container)

    def _file(self, frame: dict[str, Any]) -> dict[str, Any]:
        with self._exclusive():
            answer = self.container.session_file(frame)
        if not answer.get("ok"):
            error = str(answer.get("error") or "refused")
            details = {"field": "path"}
            if error.startswith("no file"):
                raise SessionFileNotFoundError(error, details=details)
            raise SessionFileError(error, details=details)
        return answer

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One conversation with the agent at a time (the service refuses a second cell first;
        this guards every other caller)."""
        if self._closed or self.container.dead:
            raise SandboxError("the session's sandbox has ended")
        if not self._lock.acquire(timeout=BUSY_WAIT_S):
            raise SandboxError("the session's sandbox is busy")
        try:
            yield
        finally:
            self._lock.release()


def _artifact(item: Any) -> Artifact:
    return Artifact(
        mime_type=str(item.get("type") or "image/png"),
        data_base64=str(item.get("data") or ""),
        width=int(item.get("width") or 0),
        height=int(item.get("height") or 0),
        size_bytes=int(item.get("bytes") or 0),
    )
