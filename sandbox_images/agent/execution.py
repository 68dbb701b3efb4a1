"""The processes of a run: a runner (pre-spawned or started on the spot), and one execution of it.

Every process a run starts, compiler or program, is spawned the same way: a fork of the
single-threaded agent that puts its stdio on fresh pipes, starts a new session, restores the
process attributes recorded when the container started, changes to the scratch directory and
execs a fixed argv with the allowlisted environment, holding no descriptor but 0-2 (and, for a
pre-spawned runner until its go, the control pipes on fds 3 and 4). A warm interpreter with a fork
server (zygote.py) gets its runner forked from there with the same hygiene, and adopted here.
Standard library only.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import json
import os
import secrets
import select
import signal
import stat
import time

import cleanup
import protocol
from cleanup import (
    apply_attributes,
    dying_pids,
    other_pids,
    restrict_to,
    sweep_processes,
)

KILL_GRACE_S = 0.2
READY = b"R"  # what a warm runner writes on fd 3 once it is ready for the go
READY_TIMEOUT_S = 15.0
# Without pidfd_open (gVisor) a run checks for the runner's exit every 1 ms, backing off to 20.
EXIT_POLL_S, EXIT_POLL_MAX_S = 0.001, 0.02
# An interactive run's input the program has not read yet; the pool bounds what it sends anyway.
STDIN_PENDING_MAX_BYTES = 1 << 20
EARLY_STDIN = "_early_stdin"  # STDIN frames that came during the compile step, in the request


def open_pidfd(pid: int) -> int:
    """A descriptor that polls readable when `pid` exits, or -1 where the kernel has no
    pidfd_open (gVisor's runsc before 2023): callers then ask waitpid(WNOHANG) instead."""
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        return -1


def _exec_child(spec: dict, attributes: dict, fds: tuple[int, ...]) -> None:
    """In the forked child: stdio on the pipes, a new session, the recorded attributes, no writes
    under /proc (cleanup.proc_ruleset; a runner that `restricts_itself` does it when it starts),
    exec.

    Never returns: any failure ends the child with 127, and the agent sees a dead runner.
    """
    try:
        if cleanup.proc_ruleset >= 0 and not spec.get("restricts_itself"):
            restrict_to(cleanup.proc_ruleset)  # first: the pipes below may take its descriptor
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.set_inheritable(target, True)
        os.setsid()
        apply_attributes(attributes)
        os.chdir(spec["cwd"])
        command = spec["command"]
        os.execve(command[0], command, spec["env"])  # noqa: S606  (a fixed argv, no shell)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(2, f"warmbox: runner start failed: {exc}\n".encode())
    finally:
        os._exit(127)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command's name: [0] is the state, [8] cminflt,
    [11] utime, [12] stime, [13] cutime, [14] cstime (proc(5) numbers them from 3)."""
    with open(f"/proc/{pid}/stat") as stat_file:
        return stat_file.read().rpartition(")")[2].split()


def cpu_ms(pid: int) -> float:
    """CPU time `pid` has used so far, all its threads (not its children), 0 when unknown: its
    process CPU clock (nanoseconds, exited threads included), or where the kernel does not give
    that (gVisor) the clock ticks (10 ms) of /proc/PID/stat."""
    with contextlib.suppress(OSError, OverflowError):
        return time.clock_gettime(((~pid) << 3) | 2) * 1000  # MAKE_PROCESS_CPUCLOCK(pid, SCHED)
    try:
        fields = proc_stat(pid)
        return (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0.0


def peak_kb(pid: int) -> int:
    """The process's peak resident set so far (VmHWM, what its exit's ru_maxrss would say)."""
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open(f"/proc/{pid}/status") as status,
    ):
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class ExitNotices:
    """The agent's end of the exit-notice FIFO (protocol.EXIT_NOTICES): opened read-write, so it
    never reads end of file while no runner has it open. Absent (an image without it): no notices,
    every run ends at its exit."""

    MAX_LINE = 128  # a token, a space, a status: longer lines are noise

    def __init__(self, path: str = protocol.EXIT_NOTICES) -> None:
        self.path = path
        self.fd = -1
        self.partial = b""
        self._open()

    def _open(self) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                self.fd = fd
            else:
                os.close(fd)

    def renew(self) -> None:
        """After a reset, when no process of a run is left: closed and opened again, which makes
        the kernel free the pipe and make a new one. Nothing a run did to it reaches the next
        one: no bytes, no size (F_SETPIPE_SZ)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.partial = b""
            self._open()

    def token(self) -> str:
        """A fresh token for the next run's go ("" without the FIFO); whatever earlier runs left
        in the FIFO is dropped first."""
        if self.fd < 0:
            return ""
        self.drain()
        return secrets.token_hex(16)

    def drain(self) -> None:
        self.partial = b""
        with contextlib.suppress(OSError):  # BlockingIOError once it is empty
            while os.read(self.fd, 1 << 16):
                pass

    def statuses(self, token: str) -> list[int]:
        """The exit statuses noticed under `token` among the lines that arrived; other lines (an
        earlier token, a program's writes) are dropped."""
        try:
            data = os.read(self.fd, 1 << 16)
        except OSError:
            return []
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()[: self.MAX_LINE]
        prefix = token.encode() + b" "
        found = []
        for line in lines:
            status = line[len(prefix) :]
            if token and line.startswith(prefix) and status.isdigit() and len(status) <= 3:
                found.append(int(status) & 0xFF)
        return found


class Runner:
    """One process of a run. A warm runner is pre-spawned after a clean reset, writes one byte on
    fd 4 when it is ready, and waits on fd 3 for its go: the NUL-separated mode, the exit notice's
    token (a runner with `exit_notice`, protocol.EXIT_NOTICES) and arguments, then end of file. A
    runner that compiles in-process answers on fd 4 with one JSON line, its compile report; every
    runner closes fds 3 and 4 before the program starts. A cold one (compiler, compiled program)
    has neither.
    """

    def __init__(self, spec: dict, attributes: dict, *, warm: bool) -> None:
        stdin_r, self.stdin_w = os.pipe2(os.O_CLOEXEC)
        self.stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        self.stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        child_fds = [stdin_r, stdout_w, stderr_w]
        # Pipes, not a socket pair: a run must find the socket tables as a fresh container has them.
        self.go_w = self.control = -1
        if warm:
            go_r, self.go_w = os.pipe2(os.O_CLOEXEC)
            self.control, report_w = os.pipe2(os.O_CLOEXEC)
            child_fds += [go_r, report_w]
        self.pid = os.fork()  # the agent is single-threaded: fork is safe, and about 1 ms
        if self.pid == 0:
            _exec_child(spec, attributes, tuple(child_fds))
        for fd in child_fds:
            os.close(fd)
        self.pidfd = open_pidfd(self.pid)
        self.spawned_at = time.monotonic()
        self.exit_status: int | None = None
        self.peak_kb = 0
        self.cpu_at_notice_ms = 0.0  # its CPU time when its exit notice ended the run
        self.noticed_status: int | None = None  # the status its exit notice gave (end_on_notice)

    @classmethod
    def adopt(cls, pid: int, *fds: int) -> Runner:
        """A warm runner forked by a fork server (zygote.py), with the agent's ends of its pipes.
        The zygote forked it through a middle process that has exited, so it is the agent's child
        like a runner spawned here."""
        runner = cls.__new__(cls)
        runner.stdin_w, runner.stdout_r, runner.stderr_r, runner.go_w, runner.control = fds
        runner.pid = pid
        try:
            runner.pidfd = open_pidfd(pid)
        except ProcessLookupError:  # already gone: waitpid tells its status
            runner.pidfd = -1
        runner.spawned_at = time.monotonic()
        runner.exit_status = None
        runner.peak_kb = 0
        runner.cpu_at_notice_ms = 0.0
        runner.noticed_status = None
        return runner

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        """Wait for the warm runner's ready byte (its start-up, pre-imports, JVM warm-up): the go
        is sent only after it, so a run never starts in a half-started runtime."""
        readable, _, _ = select.select([self.control], [], [], timeout_s)
        if not readable:
            return False
        return os.read(self.control, 1) == READY

    def record_exit(self, status: int, usage: object) -> None:
        self.exit_status = status if self.noticed_status is None else self.noticed_status
        self.peak_kb = int(getattr(usage, "ru_maxrss", 0))

    def poll_exit(self) -> int | None:
        """The wait status once the runner has exited (reaping it), else None."""
        if self.exit_status is None:
            try:
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:  # already reaped by a sweep
                pid, status, usage = self.pid, 0, None
            if pid == self.pid:
                self.record_exit(status, usage)
        return self.exit_status

    def end_on_notice(self, status: int) -> bool:
        """Its exit notice (protocol.EXIT_NOTICES): the runner waits after it to be killed, so it
        is killed here and its exit is `status`. True if the run may end now: the runner was the
        run's one process and never had a child, so its usage, taken before the kill, is the
        run's, and no writer is left; the kernel's teardown and the reaping come after the answer.
        False if the run ends when the kill has reaped it, with the usage its reaping reports."""
        if self.exit_status is not None:
            return False
        try:
            fields = proc_stat(self.pid)
            had_children = any(int(fields[index]) for index in (8, 13, 14))
        except (OSError, ValueError, IndexError):
            return False  # reaped already
        if fields[0] in ("Z", "X"):
            return False  # it has exited: the exit's own status stands
        alone = not had_children and not set(other_pids()) - {self.pid}
        cpu, peak = (cpu_ms(self.pid), peak_kb(self.pid)) if alone else (0.0, 0)
        alone = alone and peak > 0  # a kernel that shows no peak (gVisor): the reaping's
        self.noticed_status = status << 8
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        if not alone or set(other_pids()) - {self.pid}:  # a child, or a fork before the kill
            return False
        self.exit_status = self.noticed_status
        self.cpu_at_notice_ms, self.peak_kb = cpu, peak
        dying_pids.add(self.pid)  # the next sweep waits for it
        return True

    def kill(self) -> None:
        """Kill and reap it (it may be gone already), and close the agent's ends."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.close()

    def close(self) -> None:
        fds = (self.stdin_w, self.stdout_r, self.stderr_r, self.go_w, self.control, self.pidfd)
        for fd in fds:
            if fd >= 0:  # -1 marks one already closed: its number may belong to another file now
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.stdin_w = self.stdout_r = self.stderr_r = self.go_w = self.control = self.pidfd = -1


class Capture:
    """Keeps at most `limit` bytes of a stream and notes whether more was thrown away."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, data: bytes) -> bytes:
        """Keep what fits; returns the part kept (what a live run may stream)."""
        room = self.limit - self.size
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            self.chunks.append(data)
            self.size += len(data)
        return data

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


class OutputPump:
    """Sends what a live run's program writes as OUTPUT frames while it runs.

    Only bytes the Capture kept are sent, so a run never streams more than its output limit per
    stream; text is decoded incrementally (a character split between two reads travels whole in
    the later frame), and a frame carries at most OUTPUT_CHUNK_BYTES of output.
    """

    def __init__(self, channel: object, run_id: object) -> None:
        self.channel = channel
        self.run_id = run_id
        self.decoders = {
            name: codecs.getincrementaldecoder("utf-8")("replace") for name in protocol.STREAMS
        }

    def send(self, stream: str, data: bytes, *, final: bool = False) -> None:
        step = protocol.OUTPUT_CHUNK_BYTES
        for start in range(0, max(len(data), 1), step):
            text = self.decoders[stream].decode(data[start : start + step], final=final)
            if text:
                self.channel.send(
                    {"type": protocol.OUTPUT, "id": self.run_id, "stream": stream, "data": text}
                )

    def finish(self) -> None:
        for stream in protocol.STREAMS:
            self.send(stream, b"", final=True)


def read_oom_kills() -> int:
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as control:
                for line in control:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except OSError:
            pass
    return 0


class Execution:
    """One process run to its end: feed stdin, capture output, stop at exit, timeout or cancel.

    With `compile_timeout_s` set, the runner compiles in-process first: until its compile report
    arrives on fd 3 the compile limit applies, after it the run's own limit. A live run (`stream`)
    sends what it captures as OUTPUT frames as it arrives; an interactive one keeps the program's
    stdin open after the RUN's own stdin and feeds it what STDIN frames bring, until one says eof.
    With `notices` and the go's `token`, the runner's exit notice may end it before the exit
    (Runner.end_on_notice; `noticed` then says so).
    """

    def __init__(
        self,
        runner: Runner,
        channel: object,
        request: dict,
        *,
        stdin: bytes = b"",
        timeout_s: float,
        compile_timeout_s: float | None = None,
        stream: bool = False,
        interactive: bool = False,
        notices: ExitNotices | None = None,
        token: str = "",
    ) -> None:
        self.runner = runner
        # The exit notice this run's runner may send (protocol.EXIT_NOTICES): its token, in the go.
        self.notices = notices if token else None  # ExitNotices.token() is "" without the FIFO
        self.token = token
        self.noticed = False
        self.channel = channel
        self.request = request
        self.stdout = Capture(int(request["output_limit"]))
        self.stderr = Capture(int(request["output_limit"]))
        self.stdin = memoryview(stdin)
        self.timeout_s = timeout_s
        self.compile_timeout_s = compile_timeout_s
        self.report = bytearray()
        self.compile_report: dict | None = None
        self.exit_status: int | None = None
        self.timed_out = False
        self.cancelled = False
        self.run_started = 0.0
        self.pump = OutputPump(channel, request.get("id")) if stream else None
        self.interactive = interactive
        self.stdin_eof = not interactive  # no more input will come once the pending is written
        self.poller: select.poll | None = None
        self.pipes = {
            runner.stdout_r: ("stdout", self.stdout),
            runner.stderr_r: ("stderr", self.stderr),
        }

    def start(self, go: list[str] | None = None) -> None:
        """Send the go (a warm runner) and open the stdin pump."""
        if self.runner.go_w >= 0:
            message = b"".join(part.encode() + b"\0" for part in (go or ["run"]))
            view = memoryview(message)
            with contextlib.suppress(OSError):  # a runner that died is noticed by the wait
                while view:  # the runner reads until end of file, so this cannot block for long
                    view = view[os.write(self.runner.go_w, view) :]
            os.close(self.runner.go_w)  # end of file: the go
            self.runner.go_w = -1
        os.set_blocking(self.runner.stdin_w, False)
        if not self.stdin and self.stdin_eof:
            self._close_stdin()

    def _close_stdin(self) -> None:
        if self.runner.stdin_w >= 0:
            with contextlib.suppress(OSError):
                os.close(self.runner.stdin_w)
            self.runner.stdin_w = -1

    def _write_stdin(self) -> None:
        try:
            written = os.write(self.runner.stdin_w, self.stdin[: 1 << 16])
        except BlockingIOError:
            return
        except OSError:  # the program closed its stdin: what it did not read is dropped
            self.stdin = memoryview(b"")
            written = 0
        self.stdin = self.stdin[written:]
        if not self.stdin and self.stdin_eof:
            self._close_stdin()

    def _deadline(self, started: float) -> float:
        if self.compile_timeout_s is not None and self.compile_report is None:
            return started + self.compile_timeout_s
        return self.run_started + self.timeout_s

    def wait(self) -> float:
        """Pump the pipes until the main process ends; returns the run's duration in seconds
        (from the compile report on, for a runner that compiles in-process)."""
        started = self.run_started = time.monotonic()
        poller = self.poller = select.poll()
        open_pipes = self.pipes
        for fd in open_pipes:
            poller.register(fd, select.POLLIN)
        if self.runner.control >= 0:
            poller.register(self.runner.control, select.POLLIN)
        if self.runner.pidfd >= 0:
            poller.register(self.runner.pidfd, select.POLLIN)
        if self.notices is not None:
            poller.register(self.notices.fd, select.POLLIN)
        tick = None if self.runner.pidfd >= 0 else EXIT_POLL_S
        poller.register(0, select.POLLIN)
        self._handle_frames()
        if self.runner.stdin_w >= 0 and self.stdin:
            poller.register(self.runner.stdin_w, select.POLLOUT)
        while self.exit_status is None and not self.cancelled:
            remaining = self._deadline(started) - time.monotonic()
            if remaining <= 0:
                self.timed_out = True
                break
            for fd, events in poller.poll(min(remaining, tick or remaining) * 1000):
                self._on_event(poller, open_pipes, fd, events)
            if tick is not None and self.exit_status is None:
                self.exit_status = self.runner.poll_exit()
                tick = min(tick * 2, EXIT_POLL_MAX_S)
        duration = time.monotonic() - self.run_started
        if not self.noticed:  # after a notice the runner is the only writer, and it is done
            sweep_processes()
        self._drain(open_pipes)
        if self._finish_report():  # the run's time was counted from the go, not the report
            duration = max(0.0, duration - float(self.compile_report.get("duration_s", 0.0)))
        if self.pump is not None:
            self.pump.finish()
        return duration

    def _on_event(self, poller: select.poll, pipes: dict, fd: int, events: int) -> None:
        if fd in pipes:
            data = os.read(fd, 1 << 16)
            if data:
                self._take(fd, data)
            else:
                poller.unregister(fd)
        elif fd == self.runner.control:
            self._on_report(poller)
        elif fd == self.runner.pidfd and self.exit_status is None:
            _, status, usage = os.wait4(self.runner.pid, 0)
            self.runner.record_exit(status, usage)
            self.exit_status = self.runner.exit_status
        elif self.notices is not None and fd == self.notices.fd:
            for status in self.notices.statuses(self.token):
                if self.runner.end_on_notice(status):
                    self.exit_status, self.noticed = self.runner.exit_status, True
                    break
        elif fd == 0:
            self._on_control()
        elif fd == self.runner.stdin_w:
            self._write_stdin()
            if self.runner.stdin_w < 0 or not self.stdin:
                poller.unregister(fd)  # an interactive run's pipe waits for the next STDIN frame

    def _take(self, fd: int, data: bytes) -> None:
        name, capture = self.pipes[fd]
        kept = capture.add(data)
        if kept and self.pump is not None:
            self.pump.send(name, kept)

    def _on_report(self, poller: select.poll) -> None:
        """The runner's answer on fd 3: its compile report, then end of file."""
        try:
            data = os.read(self.runner.control, 1 << 16)
        except OSError:
            data = b""
        self.report += data[: protocol.MAX_FRAME_BYTES]
        if data:
            return
        poller.unregister(self.runner.control)
        os.close(self.runner.control)
        self.runner.control = -1
        try:
            report = json.loads(self.report.lstrip(READY) or b"{}")
        except ValueError:
            report = {}
        self.compile_report = report if isinstance(report, dict) else {}
        if self.compile_timeout_s is not None:
            self.run_started = time.monotonic()

    def _finish_report(self) -> bool:
        """A compile report whose end of file came with the runner's exit, in the same poll: the
        loop stopped at the exit. After the sweep no writer is left, so the rest is there now.
        Only a whole report (its line ended) counts: a compile cut short stays unreported."""
        if self.runner.control < 0 or self.compile_report is not None:
            return False
        os.set_blocking(self.runner.control, False)
        with contextlib.suppress(OSError):
            while data := os.read(self.runner.control, 1 << 16):
                self.report += data[: protocol.MAX_FRAME_BYTES]
        text = bytes(self.report.lstrip(READY))
        if not text.endswith(b"\n"):
            return False
        try:
            report = json.loads(text)
        except ValueError:
            return False
        self.compile_report = report if isinstance(report, dict) else {}
        return True

    def _on_control(self) -> None:
        self.channel.feed()
        if self.channel.closed:
            self.cancelled = True
            return
        self._handle_frames()

    def _handle_frames(self) -> None:
        """The frames the channel has decoded. Called once before the wait too: a CANCEL or
        STDIN that arrived in the same read as the RUN is already buffered, and poll will not
        report it."""
        early = self.request.pop(EARLY_STDIN, []) if self.interactive else []
        for frame in early:
            self._on_stdin(frame)
        while (frame := self.channel.next_frame()) is not None:
            if frame.get("id") != self.request.get("id"):
                continue  # meant for a run that has already ended
            if frame.get("type") == protocol.CANCEL:
                self.cancelled = True
            elif frame.get("type") == protocol.STDIN and self.interactive:
                self._on_stdin(frame)
            elif frame.get("type") == protocol.STDIN:  # the compile step: kept for the program
                self.request.setdefault(EARLY_STDIN, []).append(frame)

    def _on_stdin(self, frame: dict) -> None:
        """More input for an interactive run: queued for the program, the pipe closed on eof."""
        if self.stdin_eof or self.runner.stdin_w < 0:
            return  # eof was sent, or the program closed its stdin: nothing more reaches it
        data = str(frame.get("data") or "").encode("utf-8", "replace")
        room = STDIN_PENDING_MAX_BYTES - len(self.stdin)
        self.stdin = memoryview(bytes(self.stdin) + data[: max(room, 0)])
        self.stdin_eof = bool(frame.get("eof"))
        if self.stdin:
            if self.poller is not None:
                self.poller.register(self.runner.stdin_w, select.POLLOUT)
        elif self.stdin_eof:
            self._close_stdin()

    def _drain(self, pipes: dict) -> None:
        """After the sweep every writer is gone, so what is left in the pipes is finite. After an
        exit notice the runner's writes all came before it: they are in the pipes now."""
        for fd in pipes:
            os.set_blocking(fd, False)
            while True:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not data:
                    break
                self._take(fd, data)

    def exit_code(self) -> int:
        status = self.exit_status
        if status is None:
            return 137  # killed by the agent: 128 + SIGKILL, as a shell reports it
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.waitstatus_to_exitcode(status)


# --------------------------------------------------------------------------- the parked runner
# A runner whose start-up is long (node, node with the typescript compiler, the JVM with javac)
# would otherwise be started after every proof of clean, and the next run on the container would
# wait for it. Instead the agent starts the NEXT run's runner right after each proof of clean and
# parks it; it becomes the current runner at the next reset if it is still exactly as started.
# While parked it shares the container with one run (the run it was not started for), which has
# its uid. What that run can and cannot do to it, and why each is caught:
# - Read or write its memory (ptrace, /proc/PID/mem, process_vm_writev, pidfd_getfd): refused,
#   because the interpreter binary is execute-only for the sandbox user (mode 0711, set by the
#   image build), which makes the kernel mark the process non-dumpable at execve. The agent checks
#   this (its /proc entries are root-owned) and never parks where it does not hold.
# - Signal it: a kill leaves it dead, a stop leaves it stopped: both seen here. Signals the
#   runtimes act on are closed (node: the inspector a SIGUSR1 starts is given an address that
#   cannot be bound, so it fails with a line on stderr; the JVM runs with -Xrs and no attach).
# - Make it print (a failed inspector, a JVM warning): anything it wrote before its go is seen here.
# - Change its resource limits, nice, scheduling, affinity or I/O priority: compared here with
#   those of the first parked runner, started at container start before any run.
# - Plant files it reads at start-up: it reads nothing writable (absolute module paths, no HOME
#   lookups; the JVM reads no option file from its working directory).
# - Leave processes, files or sockets: the proof of clean of the next reset, as for any run.
# Anything else it could leave the runner would have to carry itself, and it cannot be reached.
PARKED_STATES_BAD = ("T", "t", "Z", "X")


def ioprio_of(pid: int) -> int | None:
    from cleanup import IOPRIO_SYSCALLS, IOPRIO_WHO_PROCESS, libc

    numbers = IOPRIO_SYSCALLS.get(os.uname().machine)
    if numbers is None:
        return None
    result = libc.syscall(numbers[1], IOPRIO_WHO_PROCESS, pid)
    return None if result < 0 else int(result)


def outside_attributes(pid: int) -> dict:
    """What a process of the same uid can change in `pid` from outside (all readable without
    ptrace access, so also for a non-dumpable process)."""
    import resource

    from cleanup import RLIMITS

    with open(f"/proc/{pid}/oom_score_adj") as adj:
        oom_score_adj = adj.read().strip()
    return {
        "rlimits": {name: list(resource.prlimit(pid, number)) for name, number in RLIMITS.items()},
        "nice": os.getpriority(os.PRIO_PROCESS, pid),
        "policy": os.sched_getscheduler(pid),
        "priority": os.sched_getparam(pid).sched_priority,
        "affinity": sorted(os.sched_getaffinity(pid)),
        "ioprio": ioprio_of(pid),
        "oom_score_adj": oom_score_adj,
    }


def protected_attributes(pid: int) -> dict | None:
    """outside_attributes of a runner the kernel hides from its uid (non-dumpable, so its /proc
    entries are root's), the baseline a runner waiting beside a run is compared with; None where
    it is not hidden (then no runner may wait beside a run)."""
    try:
        if os.stat(f"/proc/{pid}/environ").st_uid != 0:
            return None
        return outside_attributes(pid)
    except OSError:
        return None


def _readable_now(fd: int) -> bool:
    return fd >= 0 and bool(select.select([fd], [], [], 0)[0])


def parked_problems(runner: Runner, baseline: dict | None) -> list[str]:
    """Why a parked runner may not serve the next run; empty when it is as it was started.
    Call it once the runner said ready (its ready byte read) and nothing else runs."""
    if baseline is None:
        return ["no baseline"]
    if runner.poll_exit() is not None:
        return ["exited"]
    try:
        state = proc_stat(runner.pid)[0]
        if state in PARKED_STATES_BAD:
            return [f"state {state}"]
        if os.stat(f"/proc/{runner.pid}/environ").st_uid != 0:
            return ["dumpable"]
        changed = sorted(
            key for key, value in outside_attributes(runner.pid).items() if baseline[key] != value
        )
    except (OSError, IndexError, KeyError) as exc:
        return [f"unreadable: {exc!r}"]
    problems = [f"attributes changed: {changed}"] if changed else []
    if any(_readable_now(fd) for fd in (runner.stdout_r, runner.stderr_r, runner.control)):
        problems.append("output before its go")
    return problems
