"""One pooled container and the conversation with its agent.

The pool owns the policy (who gets a container, when it is reset or replaced); this class owns the
mechanics: create with the hardened configuration, attach before start so no frame is missed,
and turn agent frames into results or clear errors.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import docker
import structlog

from app.core.errors import SandboxError
from app.sandbox import engine
from app.sandbox.channel import (
    AgentChannel,
    ChannelClosedError,
    ChannelProtocolError,
    ChannelTimeoutError,
)
from app.sandbox.limits import SandboxLimits
from app.sandbox.types import RunRequest, RunResult

log = structlog.get_logger(__name__)

# How long past a run's own timeout the pool waits before it declares the agent hung.
RUN_GRACE_S = 5.0
RESET_TIMEOUT_S = 5.0
PING_TIMEOUT_S = 1.0
CHECK_TIMEOUT_S = 3.0
CANCEL_KILL_AFTER_S = 1.0
# Replies to health questions that came after their asker gave up; whoever reads next skips them.
HEALTH_REPLIES = frozenset({"pong", "check"})
_sequence = itertools.count(1)


@dataclass
class ResetReport:
    clean: bool
    problems: list[str]
    agent_ms: float
    wall_ms: float


@dataclass
class SandboxContainer:
    """A started container whose agent said hello, with the bookkeeping the pool needs."""

    client: docker.DockerClient
    container_id: str
    name: str
    channel: AgentChannel
    language_version: str
    created_at: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    runs: int = 0
    strikes: int = 0
    current_run_id: str | None = None
    cancel_requested: bool = False
    dead: bool = False
    _run_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def start(
        cls,
        client: docker.DockerClient,
        *,
        image: str,
        limits: SandboxLimits,
        labels: dict[str, str],
        name_prefix: str,
        timeout_s: float,
    ) -> SandboxContainer:
        """Create, attach, start, and wait for the agent's clean hello.

        Raises:
            SandboxError: the engine refused, the image is missing, or the agent never said hello.
        """
        name = f"{name_prefix}-{next(_sequence)}"
        container_id = engine.create_hardened_container(
            client, image, limits, labels=labels, name=name
        )
        try:
            channel = _attach(client, container_id)
            with engine.engine_errors("starting a sandbox"):
                client.api.start(container_id)
            hello = channel.receive(timeout_s)
        except (ChannelClosedError, ChannelTimeoutError, ChannelProtocolError, SandboxError) as exc:
            engine.remove_container(client, container_id)
            raise SandboxError(f"the sandbox did not start: {exc}") from exc
        if hello.get("type") != "hello" or not hello.get("clean"):
            engine.remove_container(client, container_id)
            raise SandboxError(f"the sandbox agent did not start cleanly: {hello}")
        return cls(client, container_id, name, channel, str(hello.get("version", "")))

    def run(self, request: RunRequest) -> RunResult:
        """Run one script; the container then resets itself, see `await_reset`.

        Raises:
            SandboxError: the container died or hung during the run (it is marked dead).
        """
        self.cancel_requested = False
        self.last_used = time.monotonic()
        try:
            with self._run_lock:  # a cancel for this run can only follow its run frame
                self.current_run_id = request.run_id
                self.channel.send(
                    {
                        "type": "run",
                        "id": request.run_id,
                        "code": request.code,
                        "stdin": request.stdin,
                        "timeout_s": request.timeout_s,
                        "output_limit": request.output_limit_bytes,
                    }
                )
            frame = self._receive("result", request.timeout_s + RUN_GRACE_S)
        except (ChannelClosedError, ChannelTimeoutError, ChannelProtocolError) as exc:
            self.dead = True
            if self.cancel_requested:
                return RunResult("", "cancelled", 137, 0.0, cancelled=True)
            raise SandboxError(f"the sandbox failed during the run: {_reason(exc)}") from exc
        finally:
            with self._run_lock:  # the run is over: no cancel may reach it, or a later one
                self.current_run_id = None
            self.runs += 1
        if frame.get("type") != "result" or frame.get("id") != request.run_id:
            self.dead = True
            raise SandboxError("the sandbox answered out of turn")
        return _result_from(frame)

    def await_reset(self) -> ResetReport:
        """Wait for the agent's report that the container is clean again."""
        started = time.perf_counter()
        try:
            frame = self._receive("reset", RESET_TIMEOUT_S)
        except (ChannelClosedError, ChannelTimeoutError, ChannelProtocolError) as exc:
            self.dead = True
            return ResetReport(False, [_reason(exc)], 0.0, (time.perf_counter() - started) * 1000)
        finally:
            self.last_used = time.monotonic()
        clean = frame.get("type") == "reset" and bool(frame.get("clean"))
        problems = [str(p) for p in frame.get("problems", [])] or ([] if clean else [str(frame)])
        wall_ms = (time.perf_counter() - started) * 1000
        return ResetReport(clean, problems, float(frame.get("reset_ms", 0.0)), wall_ms)

    def cancel(self, run_id: str) -> bool:
        """Ask the agent to stop run `run_id`; kill the container if it has not within 1 s.

        Returns:
            False when that run is not (or no longer) in progress here: nothing was sent.
        """
        with self._run_lock:
            if self.current_run_id != run_id:
                return False
            self.cancel_requested = True
            try:
                self.channel.send({"type": "cancel", "id": run_id})
            except ChannelClosedError:
                return False
        timer = threading.Timer(CANCEL_KILL_AFTER_S, self._kill_if_still_running, args=(run_id,))
        timer.daemon = True
        timer.start()
        return True

    def _kill_if_still_running(self, run_id: str) -> None:
        if self.current_run_id == run_id and not self.dead:
            log.warning("sandbox_cancel_forced", container=self.name)
            self.destroy()

    def ping(self) -> bool:
        """The quick health check: the agent answers a ping."""
        return self._ask({"type": "ping"}, "pong", PING_TIMEOUT_S) is not None

    def deep_check(self) -> bool:
        """The deeper check: the engine says it runs and the agent proves it is clean."""
        try:
            state = engine.container_state(self.client, self.container_id)
        except SandboxError:
            return False
        if not state.get("Running") or state.get("Paused"):
            return False
        answer = self._ask({"type": "check"}, "check", CHECK_TIMEOUT_S)
        return bool(answer and answer.get("clean"))

    def _ask(self, frame: dict[str, Any], expected: str, timeout_s: float) -> dict[str, Any] | None:
        """A health question; a slow answer is a failed check, a closed channel a dead container."""
        try:
            self.channel.send(frame)
            return self._receive(expected, timeout_s)
        except ChannelTimeoutError:
            return None
        except (ChannelClosedError, ChannelProtocolError):
            self.dead = True
            return None

    def _receive(self, expected: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self.channel.receive(max(0.0, deadline - time.monotonic()))
            kind = frame.get("type")
            if kind == expected or kind not in HEALTH_REPLIES:
                return frame

    def is_alive(self) -> bool:
        return not self.dead and self.channel.is_alive()

    def destroy(self) -> None:
        self.dead = True
        self.channel.close()
        engine.remove_container(self.client, self.container_id)


def _attach(client: docker.DockerClient, container_id: str) -> AgentChannel:
    with engine.engine_errors("attaching to a sandbox"):
        raw = client.api.attach_socket(
            container_id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        )
    return AgentChannel(raw)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ChannelClosedError):
        return "the container stopped or was killed"
    if isinstance(exc, ChannelTimeoutError):
        return "the agent stopped answering"
    return "the agent broke the protocol"


def _result_from(frame: dict[str, Any]) -> RunResult:
    return RunResult(
        stdout=str(frame.get("stdout", "")),
        stderr=str(frame.get("stderr", "")),
        exit_code=int(frame.get("exit_code", -1)),
        duration_s=float(frame.get("duration_s", 0.0)),
        timed_out=bool(frame.get("timed_out")),
        memory_exceeded=bool(frame.get("memory_exceeded")),
        output_truncated=bool(frame.get("output_truncated")),
        cancelled=bool(frame.get("cancelled")),
    )
