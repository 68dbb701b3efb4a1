"""The pool's side of the agent protocol, over a container's attached stdin/stdout.

Docker multiplexes a non-TTY container's stdout and stderr on the attach socket in frames of an
8-byte header (stream, 0, 0, 0, big-endian size) and a payload. Inside the stdout stream the agent
speaks the frames of `sandbox_images/agent/protocol.py`, the one module both sides import; its
stderr carries only diagnostics, which are logged. Writes go to the container's stdin as they are.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from typing import Any

import structlog

from sandbox_images.agent import protocol

log = structlog.get_logger(__name__)

DOCKER_HEADER = struct.Struct(">BxxxI")
STDOUT, STDERR = 1, 2
MAX_DIAGNOSTICS = 4096


class ChannelClosedError(Exception):
    """The agent's end went away: the container stopped, was killed, or the agent died."""


class ChannelTimeoutError(Exception):
    """The agent did not answer within the deadline."""


class ChannelProtocolError(Exception):
    """The agent sent something that is not a frame of the protocol."""


class AgentChannel:
    """Length-prefixed JSON frames to and from one container's agent.

    One thread reads at a time (whoever holds the container); sends are serialised by a lock so
    a cancel can be sent while another thread waits for the result.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw  # keep docker's socket wrapper alive: dropping it closes the socket
        self._sock: socket.socket = getattr(raw, "_sock", raw)
        self._send_lock = threading.Lock()
        self._docker_buffer = bytearray()
        self._frames = protocol.FrameDecoder()
        self.diagnostics = ""
        self.closed = False

    def send(self, frame: dict[str, Any]) -> None:
        try:
            data = protocol.encode(frame)
        except protocol.ProtocolError as exc:
            raise ChannelProtocolError(str(exc)) from exc
        with self._send_lock:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                self.closed = True
                raise ChannelClosedError(str(exc)) from exc

    def receive(self, timeout_s: float) -> dict[str, Any]:
        """The next frame from the agent, waiting at most `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self._next_frame()
            if frame is not None:
                return frame
            if self.closed:
                raise ChannelClosedError(self.diagnostics.strip() or "agent channel closed")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelTimeoutError(f"no answer within {timeout_s:.1f}s")
            self._read(remaining)

    def is_alive(self) -> bool:
        """Cheap check for a container handed out next: the socket is not at end of file."""
        if self.closed:
            return False
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            self.closed = True
            return False
        if readable:
            self._read(0)
        return not self.closed

    def close(self) -> None:
        self.closed = True
        for closer in (getattr(self._raw, "close", None), self._sock.close):
            if closer is not None:
                with contextlib.suppress(OSError):
                    closer()

    def _read(self, timeout_s: float) -> None:
        try:
            readable, _, _ = select.select([self._sock], [], [], timeout_s)
            if not readable:
                return
            chunk = self._sock.recv(1 << 16)
        except (OSError, ValueError):
            chunk = b""
        if not chunk:
            self.closed = True
            return
        self._docker_buffer += chunk
        self._demultiplex()

    def _demultiplex(self) -> None:
        buffer = self._docker_buffer
        while len(buffer) >= DOCKER_HEADER.size:
            stream, size = DOCKER_HEADER.unpack_from(buffer)
            end = DOCKER_HEADER.size + size
            if len(buffer) < end:
                return
            payload = bytes(buffer[DOCKER_HEADER.size : end])
            del buffer[:end]
            if stream == STDOUT:
                self._frames.feed(payload)
            elif stream == STDERR:
                self._note_diagnostics(payload)

    def _note_diagnostics(self, payload: bytes) -> None:
        text = payload.decode("utf-8", "replace")
        self.diagnostics = (self.diagnostics + text)[-MAX_DIAGNOSTICS:]
        log.warning("sandbox_agent_stderr", text=text[:500])

    def _next_frame(self) -> dict[str, Any] | None:
        try:
            return self._frames.next_frame()
        except protocol.ProtocolError as exc:
            raise ChannelProtocolError(str(exc)) from exc
