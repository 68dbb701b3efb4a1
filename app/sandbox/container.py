"""One pooled container and the conversation with its agent.

The pool owns the policy (who gets a container, when it is reset or replaced); this class owns the
mechanics: create with the hardened configuration, attach before start so no frame is missed,
and turn agent frames into results or clear errors.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
import uuid
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
from app.sandbox.languages import IMAGE_BUILD_COMMAND, sources_hash
from app.sandbox.limits import SandboxLimits
from app.sandbox.types import (
    CaseCallback,
    CompileResult,
    GradeRequest,
    GradeResult,
    OutputCallback,
    RunFile,
    RunRequest,
    RunResult,
    Usage,
)
from sandbox_images.agent import protocol

log = structlog.get_logger(__name__)

# How long past a run's own timeout the pool waits before it declares the agent hung.
RUN_GRACE_S = 5.0
RESET_TIMEOUT_S = 20.0  # includes the next runner getting ready (JVM warm-up, pre-imports)
PING_TIMEOUT_S = 1.0
CHECK_TIMEOUT_S = 3.0
CANCEL_KILL_AFTER_S = 1.0
# Replies to health questions that came after their asker gave up; whoever reads next skips them.
HEALTH_REPLIES = frozenset({protocol.PONG, protocol.CHECK})
SESSION_RESULT_FIELDS = ("artifacts", "artifacts_dropped", "interrupted", "restarted")
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
    failed_pings: int = 0
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
        problem = _hello_problem(hello, image)
        if problem:
            engine.remove_container(client, container_id)
            raise SandboxError(problem)
        return cls(client, container_id, name, channel, str(hello.get("version", "")))

    def run(self, request: RunRequest, on_output: OutputCallback | None = None) -> RunResult:
        """Run one script; the container then resets itself, see `await_reset`.

        Args:
            request: what to run; with `stream` the agent sends output while the program runs.
            on_output: called on this thread with (stream, text) for each chunk of a live run,
                at most the run's output limit per stream in all.
        Raises:
            SandboxError: the container died or hung during the run (it is marked dead).
        """
        self.cancel_requested = False
        self.last_used = time.monotonic()
        try:
            with self._run_lock:  # a cancel for this run can only follow its run frame
                self.current_run_id = request.run_id
                self.channel.send(_run_frame(request))
            wait_s = request.timeout_s + request.compile_timeout_s + RUN_GRACE_S
            frame = self._receive_result(request, wait_s, on_output)
        except (ChannelClosedError, ChannelTimeoutError, ChannelProtocolError) as exc:
            self.dead = True
            if self.cancel_requested:
                return RunResult("", "cancelled", 137, 0.0, cancelled=True)
            raise SandboxError(f"the sandbox failed during the run: {_reason(exc)}") from exc
        finally:
            with self._run_lock:  # the run is over: no cancel may reach it, or a later one
                self.current_run_id = None
            self.runs += 1
        if frame.get("type") != protocol.RESULT or frame.get("id") != request.run_id:
            self.dead = True
            raise SandboxError("the sandbox answered out of turn")
        return _result_from(frame)

    def grade(self, request: GradeRequest, on_case: CaseCallback | None = None) -> GradeResult:
        """Grade a program's cases in this container, in one round trip (a GRADE frame, a CASE
        frame per case, GRADED); the container then resets itself once, see `await_reset`.

        Args:
            request: the program and its cases; `run_id` is what `cancel` takes.
            on_case: called on this thread with (index, result) as each case ends.
        Raises:
            SandboxError: the container died or hung while grading (it is marked dead); the
                cases that ended before were already handed to `on_case`.
        """
        self.cancel_requested = False
        self.last_used = time.monotonic()
        results: list[RunResult] = []
        # Between two frames: the longest case, the compile, a between-case reset, and grace.
        longest = max((case.timeout_s for case in request.cases), default=0.0)
        wait_s = longest + request.compile_timeout_s + RESET_TIMEOUT_S + RUN_GRACE_S
        try:
            with self._run_lock:
                self.current_run_id = request.run_id
                self.channel.send(_grade_frame(request))
            while (frame := self._receive(protocol.GRADED, wait_s)).get("type") == protocol.CASE:
                if frame.get("id") != request.run_id or frame.get("index") != len(results):
                    break
                results.append(_result_from(frame))
                if on_case is not None:
                    on_case(len(results) - 1, results[-1])
        except (ChannelClosedError, ChannelTimeoutError, ChannelProtocolError) as exc:
            self.dead = True
            if self.cancel_requested:
                return GradeResult(tuple(results), error="cancelled")
            raise SandboxError(f"the sandbox failed while grading: {_reason(exc)}") from exc
        finally:
            with self._run_lock:
                self.current_run_id = None
            self.runs += 1
        if frame.get("type") != protocol.GRADED or frame.get("id") != request.run_id:
            self.dead = True
            raise SandboxError("the sandbox answered out of turn")
        error = frame.get("error")
        return GradeResult(tuple(results), _build_from(frame), str(error) if error else None)

    def _receive_result(
        self, request: RunRequest, wait_s: float, on_output: OutputCallback | None
    ) -> dict[str, Any]:
        """The RESULT frame, handing the OUTPUT frames before it to `on_output`. The limit is
        kept here too, so no agent can make the caller hold more than the run's output limit."""
        deadline = time.monotonic() + wait_s
        sent = dict.fromkeys(protocol.STREAMS, 0)
        while True:
            frame = self._receive(protocol.RESULT, max(0.0, deadline - time.monotonic()))
            if frame.get("type") != protocol.OUTPUT or frame.get("id") != request.run_id:
                return frame
            stream, text = frame.get("stream"), frame.get("data")
            if on_output is None or stream not in sent or not isinstance(text, str):
                continue
            room = request.output_limit_bytes - sent[stream]
            data = text.encode("utf-8", "replace")
            if room <= 0 or not data:
                continue
            sent[stream] += min(len(data), room)
            on_output(stream, data[:room].decode("utf-8", "ignore") if len(data) > room else text)

    def send_stdin(self, run_id: str, data: str, eof: bool = False) -> bool:
        """Give more input to interactive run `run_id` (the agent ignores it for another run).

        Returns:
            False when that run is not (or no longer) in progress here: nothing was sent.
        """
        with self._run_lock:
            if self.current_run_id != run_id:
                return False
            try:
                self.channel.send({"type": protocol.STDIN, "id": run_id, "data": data, "eof": eof})
            except (ChannelClosedError, ChannelProtocolError):
                return False
        return True

    def await_reset(self) -> ResetReport:
        """Wait for the agent's report that the container is clean again."""
        started = time.perf_counter()
        try:
            frame = self._receive(protocol.RESET, RESET_TIMEOUT_S)
        except (ChannelClosedError, ChannelTimeoutError, ChannelProtocolError) as exc:
            self.dead = True
            return ResetReport(False, [_reason(exc)], 0.0, (time.perf_counter() - started) * 1000)
        finally:
            self.last_used = time.monotonic()
        clean = frame.get("type") == protocol.RESET and bool(frame.get("clean"))
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
                self.channel.send({"type": protocol.CANCEL, "id": run_id})
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
        return self._ask({"type": protocol.PING}, protocol.PONG, PING_TIMEOUT_S) is not None

    def deep_check(self) -> bool:
        """The deeper check: the engine says it runs and the agent proves it is clean."""
        try:
            state = engine.container_state(self.client, self.container_id)
        except SandboxError:
            return False
        if not state.get("Running") or state.get("Paused"):
            return False
        answer = self._ask({"type": protocol.CHECK}, protocol.CHECK, CHECK_TIMEOUT_S)
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

    # ------------------------------------------------------------------ sessions (issue 13)

    def open_session(self, *, max_file_bytes: int, max_files: int) -> None:
        """Turn this container's warm runner into a session kernel.

        Raises:
            SandboxError: the agent refused (no kernel for this language) or did not answer.
        """
        frame = {
            "type": protocol.SESSION_OPEN,
            "max_file_bytes": max_file_bytes,
            "max_files": max_files,
        }
        # The agent first replaces a runner that died while idle, as before a run: that includes
        # the next runner getting ready, which on a loaded machine takes longer than a ping.
        wait_s = RESET_TIMEOUT_S + PING_TIMEOUT_S
        answer = self._session_exchange(frame, protocol.SESSION_OPEN, wait_s)
        if not answer.get("ok"):
            raise SandboxError(f"the sandbox could not open a session: {answer.get('problem')}")

    def run_cell(self, request: RunRequest) -> tuple[RunResult, dict[str, Any]]:
        """Run one cell of the open session: its result, and the session's own fields of the
        RESULT frame (artifacts, artifacts_dropped, interrupted, restarted).

        Raises:
            SandboxError: the container died or hung during the cell (it is marked dead).
        """
        self.last_used = time.monotonic()
        # Past the cell's timeout: SIGINT's grace, then perhaps a new kernel getting warm.
        wait_s = request.timeout_s + RESET_TIMEOUT_S + RUN_GRACE_S
        frame = self._session_exchange(_run_frame(request), protocol.RESULT, wait_s)
        self.runs += 1
        if frame.get("id") != request.run_id:
            self.dead = True
            raise SandboxError("the sandbox answered out of turn")
        extras = {key: frame.get(key) for key in SESSION_RESULT_FIELDS}
        return _result_from(frame), extras

    def session_file(self, frame: dict[str, Any]) -> dict[str, Any]:
        """One SESSION_FILE operation (fields in protocol.py); the agent's answer.

        Raises:
            SandboxError: the container died or hung (it is marked dead).
        """
        self.last_used = time.monotonic()
        request = {"type": protocol.SESSION_FILE, "id": uuid.uuid4().hex, **frame}
        answer = self._session_exchange(request, protocol.SESSION_FILE, CHECK_TIMEOUT_S * 5)
        if answer.get("id") != request["id"]:
            self.dead = True
            raise SandboxError("the sandbox answered out of turn")
        return answer

    def close_session(self) -> None:
        """End the session; the agent then wipes the container and sends the usual RESET,
        which the pool awaits (`await_reset`) before it reuses the container.

        Raises:
            SandboxError: the channel is closed (the container is marked dead).
        """
        try:
            self.channel.send({"type": protocol.SESSION_CLOSE})
        except (ChannelClosedError, ChannelProtocolError) as exc:
            self.dead = True
            raise SandboxError(f"the sandbox failed: {_reason(exc)}") from exc

    def _session_exchange(
        self, frame: dict[str, Any], expected: str, timeout_s: float
    ) -> dict[str, Any]:
        try:
            self.channel.send(frame)
            answer = self._receive(expected, timeout_s)
        except (ChannelClosedError, ChannelTimeoutError, ChannelProtocolError) as exc:
            self.dead = True
            raise SandboxError(f"the sandbox failed during the session: {_reason(exc)}") from exc
        if answer.get("type") != expected:
            self.dead = True
            raise SandboxError(f"the sandbox answered {answer.get('type')!r} to a session frame")
        return answer

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


def _hello_problem(hello: dict[str, Any], image: str) -> str | None:
    """Why this agent cannot serve, or None: an image from other sources speaks another
    protocol and must be rebuilt, which the operator is told in so many words."""
    if hello.get("type") != protocol.HELLO:
        return f"the sandbox agent did not start cleanly: {hello}"
    if hello.get("protocol") != protocol.VERSION:
        return (
            f"the sandbox image {image!r} speaks agent protocol {hello.get('protocol')!r}, this "
            f"service speaks {protocol.VERSION}: rebuild it with {IMAGE_BUILD_COMMAND}"
        )
    expected = sources_hash(str(hello.get("language", "")))
    if expected and hello.get("sources") != expected:
        return (
            f"the sandbox image {image!r} was built from other sources than this service's "
            f"(image {str(hello.get('sources') or 'without a hash')[:14]}, service "
            f"{expected[:12]}): rebuild it with {IMAGE_BUILD_COMMAND}"
        )
    if not hello.get("clean"):
        return f"the sandbox agent did not start cleanly: {hello}"
    return None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ChannelClosedError):
        return "the container stopped or was killed"
    if isinstance(exc, ChannelTimeoutError):
        return "the agent stopped answering"
    return "the agent broke the protocol"


def _run_frame(request: RunRequest) -> dict[str, Any]:
    """The RUN frame (fields declared in protocol.py); bytes travel as base64."""
    return {
        "type": protocol.RUN,
        "id": request.run_id,
        "code": request.code,
        "stdin": request.stdin,
        "timeout_s": request.timeout_s,
        "output_limit": request.output_limit_bytes,
        "args": list(request.args),
        "files": _files_field(request.files),
        "compile_timeout_s": request.compile_timeout_s,
        "build": base64.b64encode(request.build).decode() if request.build else None,
        "stream": request.stream,
        "interactive": request.interactive,
        "park_delay_ms": request.park_delay_ms,
    }


def _files_field(files: tuple[RunFile, ...]) -> list[dict[str, str]]:
    return [
        {"name": item.name, "content": base64.b64encode(item.content).decode()} for item in files
    ]


def _grade_frame(request: GradeRequest) -> dict[str, Any]:
    """The GRADE frame (fields declared in protocol.py): the program once, then each case."""
    return {
        "type": protocol.GRADE,
        "id": request.run_id,
        "code": request.code,
        "output_limit": request.output_limit_bytes,
        "files": _files_field(request.files),
        "compile_timeout_s": request.compile_timeout_s,
        "build": base64.b64encode(request.build).decode() if request.build else None,
        "cases": [
            {"stdin": case.stdin, "args": list(case.args), "timeout_s": case.timeout_s}
            for case in request.cases
        ],
    }


def _compile_from(frame: dict[str, Any]) -> CompileResult | None:
    step = frame.get("compile")
    if not isinstance(step, dict):
        return None
    return CompileResult(
        output=str(step.get("output", "")),
        exit_code=int(step.get("exit_code", -1)),
        duration_s=float(step.get("duration_s", 0.0)),
        cached=bool(step.get("cached")),
    )


def _usage_from(frame: dict[str, Any]) -> Usage | None:
    usage = frame.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(
        cpu_time_ms=float(usage.get("cpu_time_ms", 0.0)),
        wall_time_ms=float(usage.get("wall_time_ms", 0.0)),
        peak_memory_kb=int(usage.get("peak_memory_kb", 0)),
    )


def _build_from(frame: dict[str, Any]) -> bytes | None:
    """The build archive, dropped when it is not base64 or over protocol.BUILD_MAX_BYTES."""
    encoded = frame.get("build")
    if not isinstance(encoded, str) or not encoded:
        return None
    try:
        build = base64.b64decode(encoded, validate=True)
    except ValueError:
        return None
    return build if len(build) <= protocol.BUILD_MAX_BYTES else None


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
        compile=_compile_from(frame),
        usage=_usage_from(frame),
        build=_build_from(frame),
        exit_noticed=bool(frame.get("exit_noticed")),
    )
