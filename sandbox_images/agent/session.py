"""The agent's side of a session (issue 13): the warm runner becomes a kernel that keeps state,
RUNs become cells in it, and file operations reach the session's scratch.

Why it is shaped like this:
- A session is made from the runner that is already warm (its imports done): opening one is a
  go to that runner, no process start. The kernel (kernel.py in the image) reads cells on its
  stdin pipe and answers each on its report pipe; the agent pumps the cell's stdout/stderr with
  the run's output limit, exactly as for a run, so a cell cannot grow the agent's memory.
- The agent stays the trust boundary. A cell can break only its own kernel: garbage on the
  report pipe, a kernel that exits or ignores SIGINT past the grace, all end with the kernel and
  every process of the session killed and a fresh kernel in its place, and the result says
  `restarted: true` (state lost, files kept): never silently.
- File operations walk the scratch one component at a time with O_NOFOLLOW relative to the
  parent's descriptor, so neither `..`, an absolute path nor a symlink planted by a cell (even
  racing the operation) reaches outside the scratch; sizes and counts are bounded.
- SESSION_CLOSE ends with the agent's normal reset: every process killed, scratch wiped, the
  proof of clean sent to the pool, which reuses the container only on that proof.
Standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import time

import protocol
from cleanup import sweep_processes
from execution import READY, Capture, Runner, cpu_ms, peak_kb, read_oom_kills
from session_files import (
    SessionError,
    delete_file,
    file_exists,
    list_files,
    read_file,
    write_file,
)
from workspace import WorkspaceError

INTERRUPT_GRACE_S = 1.0  # after SIGINT, how long a cell has to come back before the kernel dies
EXIT_POLL_S = 0.02  # without pidfd (gVisor): how often a cell checks that the kernel lives
DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_FILES = 256


class Session:
    """One open session: its kernel and its limits."""

    def __init__(self, agent: object, frame: dict) -> None:
        self.agent = agent
        self.max_file_bytes = int(frame.get("max_file_bytes") or DEFAULT_MAX_FILE_BYTES)
        self.max_files = int(frame.get("max_files") or DEFAULT_MAX_FILES)
        self.kernel: Runner | None = None
        self.cells = 0

    # ------------------------------------------------------------------ the kernel

    def start(self) -> str | None:
        """Turn the warm runner into the kernel; the problem, or None once it is one."""
        agent = self.agent
        if not os.path.exists(protocol.SESSION_KERNEL) or not agent.language.runner:
            return f"{agent.language.name} has no session kernel"
        if not agent.runner_alive():
            agent.reset()
        runner = agent.take_warm_runner()
        if runner is None:
            return "no warm runner to become the kernel"
        self._go(runner)
        return None

    def _go(self, runner: Runner) -> None:
        with contextlib.suppress(OSError):  # a runner that died is noticed by the first cell
            os.write(runner.go_w, protocol.SESSION_GO.encode() + b"\0")
        os.close(runner.go_w)
        runner.go_w = -1
        os.set_blocking(runner.stdin_w, False)
        self.kernel = runner

    def restart(self) -> bool:
        """Kill the kernel and every process of the session, keep the files, start a new kernel
        from a fresh warm runner. False when no kernel could be started."""
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None
        sweep_processes()
        agent = self.agent
        config = agent.language.env.get("MPLCONFIGDIR", "")
        if config.startswith(protocol.SCRATCH + "/"):  # the warm runner's own cache dir: a
            shutil.rmtree(config, ignore_errors=True)  # runner that finds it there fails to start
        agent.spawn_runner()  # the agent's own path (a fork server's, where there is one)
        alive = agent.runner_alive()
        runner = agent.take_warm_runner()
        if runner is None or not alive:
            if runner is not None:
                runner.close()
            sweep_processes()
            return False
        self._go(runner)
        return True

    def kernel_alive(self) -> bool:
        kernel = self.kernel
        if kernel is None:
            return False
        if kernel.pidfd >= 0:
            return not select.select([kernel.pidfd], [], [], 0)[0]
        return kernel.poll_exit() is None

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None

    # ------------------------------------------------------------------ cells

    def cell(self, request: dict) -> dict:
        """Run one cell; the RESULT frame, with artifacts and what happened to the kernel."""
        result = {
            "type": protocol.RESULT,
            "id": request.get("id"),
            "compile": None,
            "build": None,
            "artifacts": [],
            "artifacts_dropped": 0,
            "interrupted": False,
            "restarted": False,
        }
        if not self.kernel_alive():  # it died between cells (a thread of the last one exited it)
            result["restarted"] = True
            if not self.restart():
                return self._lost(result)
        oom_before = read_oom_kills()
        self.cells += 1
        cell = CellRun(self.kernel, request, self.agent.channel)
        report = cell.wait()
        result.update(cell.outcome())
        result["memory_exceeded"] = read_oom_kills() > oom_before
        if report is None:  # killed, crashed, or it broke the report pipe: state is lost
            result["restarted"] = True
            if not self.restart():
                result["stderr"] += "warmbox: the session's kernel could not be restarted\n"
            return result
        result["exit_code"] = int(report.get("exit_code", 1))
        result["interrupted"] = bool(report.get("interrupted"))
        result["artifacts"] = _artifacts(report.get("artifacts"))
        result["artifacts_dropped"] = int(report.get("artifacts_dropped") or 0)
        return result

    @staticmethod
    def _lost(result: dict) -> dict:
        result.update(
            stdout="",
            stderr="warmbox: the session's kernel could not be restarted\n",
            exit_code=126,
            duration_s=0.0,
            timed_out=False,
            cancelled=False,
            output_truncated=False,
            memory_exceeded=False,
        )
        return result

    # ------------------------------------------------------------------ files

    def file_op(self, frame: dict) -> dict:
        answer = {"type": protocol.SESSION_FILE, "id": frame.get("id"), "ok": True, "error": None}
        op = frame.get("op")
        try:
            if op == "list":
                answer["files"] = list_files(protocol.SCRATCH, self.max_files)
            elif op == "put":
                self._put(str(frame.get("path")), frame.get("content"))
            elif op == "get":
                data = read_file(protocol.SCRATCH, frame.get("path"), self.max_file_bytes)
                answer["content"] = base64.b64encode(data).decode()
            elif op == "delete":
                delete_file(protocol.SCRATCH, frame.get("path"))
            else:
                raise SessionError(f"unknown file operation {op!r}")
        except (SessionError, WorkspaceError) as exc:
            answer.update(ok=False, error=str(exc))
        return answer

    def _put(self, path: str, content: object) -> None:
        try:
            data = base64.b64decode(str(content or ""), validate=True)
        except ValueError as exc:
            raise SessionError("content is not base64") from exc
        if len(data) > self.max_file_bytes:
            raise SessionError(f"file is over {self.max_file_bytes} bytes")
        exists = file_exists(protocol.SCRATCH, path)
        if not exists and len(list_files(protocol.SCRATCH, self.max_files + 1)) >= self.max_files:
            raise SessionError(f"the session already holds {self.max_files} files")
        write_file(protocol.SCRATCH, path, data)


class CellRun:
    """One cell to its end: send it, pump its output, wait for the kernel's report, interrupt it
    at its timeout and kill the kernel when SIGINT does not bring it back."""

    def __init__(self, kernel: Runner, request: dict, channel: object) -> None:
        self.kernel = kernel
        self.channel = channel
        self.request = request
        limit = int(request["output_limit"])
        self.stdout, self.stderr = Capture(limit), Capture(limit)
        message = {
            "code": request.get("code", ""),
            "stdin": request.get("stdin") or "",
            "artifacts_max": protocol.ARTIFACTS_MAX,
            "artifacts_max_bytes": protocol.ARTIFACTS_MAX_BYTES,
        }
        self.pending = memoryview(json.dumps(message).encode() + b"\n")
        self.report = bytearray()
        self.timed_out = self.cancelled = False
        self.exit_status: int | None = None
        self.started = self.duration = 0.0
        self.cpu_before = cpu_ms(kernel.pid)

    def wait(self) -> dict | None:
        """The kernel's report, or None when the kernel died, was killed or broke the pipe."""
        self.started = time.monotonic()
        deadline = self.started + float(self.request["timeout_s"])
        interrupted_at = None
        pipes = {self.kernel.stdout_r: self.stdout, self.kernel.stderr_r: self.stderr}
        while True:
            now = time.monotonic()
            if interrupted_at is None and (now >= deadline or self.cancelled):
                self.timed_out = not self.cancelled
                interrupted_at = now
                with contextlib.suppress(OSError):
                    os.kill(self.kernel.pid, signal.SIGINT)
            if interrupted_at is not None and now >= interrupted_at + INTERRUPT_GRACE_S:
                self._kill()
                return None
            limit = (interrupted_at + INTERRUPT_GRACE_S if interrupted_at else deadline) - now
            report = self._round(pipes, max(limit, 0.0))
            if report is not None or self.exit_status is not None:
                self.duration = time.monotonic() - self.started
                self._drain(pipes)
                return report if self.exit_status is None else None

    def _round(self, pipes: dict, timeout_s: float) -> dict | None:
        kernel = self.kernel
        readers = [*pipes, kernel.control, 0] + ([kernel.pidfd] if kernel.pidfd >= 0 else [])
        writers = [kernel.stdin_w] if self.pending else []
        wait_s = timeout_s if kernel.pidfd >= 0 else min(timeout_s, EXIT_POLL_S)
        try:
            readable, writable, _ = select.select(readers, writers, [], wait_s)
        except OSError:
            readable, writable = [], []
        if writable:
            self._send()
        for fd in readable:
            if fd in pipes:
                _read_into(fd, pipes[fd])
            elif fd == 0:
                self._on_control()
            elif fd == kernel.control:
                report = self._on_report()
                if report is not None:
                    return report
        if kernel.pidfd in readable or kernel.pidfd < 0:
            self.exit_status = kernel.poll_exit()
        return None

    def _send(self) -> None:
        try:
            written = os.write(self.kernel.stdin_w, self.pending[: 1 << 16])
        except BlockingIOError:
            return
        except OSError:  # the kernel closed its end: the wait notices it died
            written = len(self.pending)
        self.pending = self.pending[written:]

    def _on_report(self) -> dict | None:
        try:
            data = os.read(self.kernel.control, 1 << 16)
        except OSError:
            data = b""
        if not data or len(self.report) + len(data) > protocol.MAX_FRAME_BYTES:
            self._kill()  # the kernel closed or flooded its report pipe: it is not ours anymore
            return None
        self.report += data
        # A runner that got ready after the agent stopped waiting for it left its ready byte.
        line, newline, _ = bytes(self.report).lstrip(READY).partition(b"\n")
        if not newline:
            return None
        try:
            report = json.loads(line)
        except ValueError:
            report = None
        if not isinstance(report, dict):
            self._kill()
            return None
        return report

    def _on_control(self) -> None:
        channel = self.channel
        channel.feed()
        if channel.closed:
            self.cancelled = True
            return
        while (frame := channel.next_frame()) is not None:
            if frame.get("type") == protocol.CANCEL and frame.get("id") == self.request.get("id"):
                self.cancelled = True

    def _kill(self) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.kernel.pid, signal.SIGKILL)
        try:
            _, status, usage = os.wait4(self.kernel.pid, 0)
            self.kernel.record_exit(status, usage)
        except ChildProcessError:  # reaped already, or not our child (forked by a fork server)
            status = self.kernel.exit_status if self.kernel.exit_status is not None else -1
        self.exit_status = status

    def _drain(self, pipes: dict) -> None:
        for fd, capture in pipes.items():
            os.set_blocking(fd, False)
            while _read_into(fd, capture):
                pass
            os.set_blocking(fd, True)

    def outcome(self) -> dict:
        status = self.exit_status
        exit_code = 137 if status is None or status < 0 else _exit_code(status)
        return {
            "stdout": self.stdout.text(),
            "stderr": self.stderr.text(),
            "exit_code": exit_code,
            "duration_s": self.duration,
            "timed_out": self.timed_out,
            "cancelled": self.cancelled,
            "output_truncated": self.stdout.truncated or self.stderr.truncated,
            "runner_age_ms": 0.0,
            "usage": {
                "cpu_time_ms": max(0.0, cpu_ms(self.kernel.pid) - self.cpu_before),
                "wall_time_ms": self.duration * 1000,
                "peak_memory_kb": peak_kb(self.kernel.pid),
            },
        }


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def _read_into(fd: int, capture: Capture) -> bool:
    try:
        data = os.read(fd, 1 << 16)
    except (BlockingIOError, OSError):
        return False
    capture.add(data)
    return bool(data)


def _artifacts(items: object) -> list[dict]:
    """Only well-formed PNG artifacts travel on to the pool."""
    if not isinstance(items, list):
        return []
    kept = []
    for item in items[: protocol.ARTIFACTS_MAX]:
        if isinstance(item, dict) and isinstance(item.get("data"), str):
            kept.append(
                {
                    "type": "image/png",
                    "data": item["data"],
                    "width": int(item.get("width") or 0),
                    "height": int(item.get("height") or 0),
                    "bytes": int(item.get("bytes") or 0),
                }
            )
    return kept


# --------------------------------------------------------------------------- dispatch


def handle(agent: object, session: Session | None, frame: dict) -> Session | None:
    """A frame that arrived while a session is open (or opens one); returns the open session."""
    kind = frame.get("type")
    channel = agent.channel
    if kind == protocol.SESSION_OPEN:
        if session is not None:
            channel.send({"type": protocol.SESSION_OPEN, "ok": False, "problem": "already open"})
            return session
        session = Session(agent, frame)
        problem = session.start()
        channel.send({"type": protocol.SESSION_OPEN, "ok": problem is None, "problem": problem})
        return session if problem is None else None
    if session is None:
        channel.send({"type": protocol.ERROR, "message": f"no session is open for {kind!r}"})
        return None
    if kind == protocol.RUN:
        channel.send(session.cell(frame))
    elif kind == protocol.SESSION_FILE:
        channel.send(session.file_op(frame))
    elif kind == protocol.SESSION_CLOSE:
        session.close()
        agent.reset(report=True)  # the normal wipe and proof of clean
        return None
    elif kind == protocol.PING:
        channel.send({"type": protocol.PONG, "runs": agent.runs, "runner": session.kernel_alive()})
    elif kind == protocol.CHECK:
        channel.send({"type": protocol.CHECK, "clean": False, "problems": ["a session is open"]})
    elif kind != protocol.CANCEL:  # a cancel for a cell that has ended: nothing to stop
        channel.send({"type": protocol.ERROR, "message": f"unknown frame type {kind!r}"})
    return session
