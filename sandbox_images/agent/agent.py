"""warmbox in-container agent: PID 1 of every pooled sandbox.

It talks to the pool over the container's attached stdin/stdout with length-prefixed JSON frames,
runs one script at a time in a pre-spawned language runner, and after every run brings the
container back to a state it can prove clean before the next run is accepted.

Why it is shaped like this (the isolation argument, also in the README):
- It is PID 1 of the container's PID namespace. The kernel delivers to a namespace's init only the
  signals it has a handler for, and never SIGKILL/SIGSTOP from inside; it installs no handler, so
  code in the sandbox cannot kill or stop it.
- It makes itself non-dumpable (PR_SET_DUMPABLE 0): /proc/1/{mem,environ,fd,maps} become
  root-owned and ptrace/process_vm_readv are refused, so a run cannot read the next run's code,
  stdin or output from it, nor write to its channel to the pool.
- Runs execute in a child process (dumpable again after execve, as any user program) with a
  minimal allowlisted environment, fds 0-2 only, cwd /tmp.
- After each run `kill(-1, SIGKILL)` removes every other process in the namespace (the kernel
  excludes only the caller and init, and a fork racing the kill is aborted), repeated and reaped
  until /proc shows no other process. Then scratch (/tmp), POSIX message queues and System V IPC
  objects are removed, and the clean state is verified before the agent reports it.
- The next runner is spawned only after that verification, so nothing of one run survives into
  the process that receives the next.
Only the standard library is used; the agent must start in any image that has python3.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import stat
import struct
import sys
import time

PROTOCOL_VERSION = 1
SCRATCH = "/tmp"
CODE_PATH = "/tmp/main.py"
CONFIG_PATH = "/opt/warmbox/language.json"
MQUEUE_DIR = "/dev/mqueue"
SYSVIPC = {"shm": 0, "msg": 1, "sem": 2}
IPC_RMID = 0
PR_SET_DUMPABLE = 4
SWEEP_DEADLINE_S = 2.0
KILL_GRACE_S = 0.2
HEADER = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024
RUN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": SCRATCH,
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "TMPDIR": SCRATCH,
}

libc = ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------- channel to the pool


class Channel:
    """Length-prefixed JSON frames over fd 0 (from the pool) and fd 1 (to the pool)."""

    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False

    def send(self, message: dict) -> None:
        payload = json.dumps(message, separators=(",", ":")).encode()
        data = HEADER.pack(len(payload)) + payload
        view = memoryview(data)
        while view:
            written = os.write(1, view)
            view = view[written:]

    def feed(self) -> None:
        """Read what is available on fd 0 (call when poll says it is readable)."""
        chunk = os.read(0, 1 << 16)
        if not chunk:
            self.closed = True
        self.buffer += chunk

    def next_frame(self) -> dict | None:
        if len(self.buffer) < HEADER.size:
            return None
        (length,) = HEADER.unpack_from(self.buffer)
        if length > MAX_FRAME:
            raise ValueError("frame too large")
        if len(self.buffer) < HEADER.size + length:
            return None
        payload = self.buffer[HEADER.size : HEADER.size + length]
        self.buffer = self.buffer[HEADER.size + length :]
        return json.loads(payload)

    def receive(self) -> dict | None:
        """Block until a whole frame arrives; None when the pool closed the channel."""
        while True:
            frame = self.next_frame()
            if frame is not None or self.closed:
                return frame
            self.feed()


# --------------------------------------------------------------------------- process hygiene


def harden_self() -> None:
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)
    for fd in (0, 1, 2):
        os.set_inheritable(fd, False)


def other_pids() -> list[int]:
    me = os.getpid()
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != me]


def reap() -> dict[int, int]:
    """Collect every exited child without blocking; returns pid -> wait status."""
    statuses: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return statuses
        if pid == 0:
            return statuses
        statuses[pid] = status


def sweep_processes() -> bool:
    """Kill every process but this one until none is left; False if some survived the deadline."""
    deadline = time.monotonic() + SWEEP_DEADLINE_S
    while True:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)
        reap()
        if not other_pids():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


def _make_removable(func: object, path: str, _exc: object) -> None:
    """rmtree error hook: a run may have made a directory unreadable; take it back and retry."""
    parent = os.path.dirname(path)
    with contextlib.suppress(OSError):
        os.chmod(parent, stat.S_IRWXU)
    with contextlib.suppress(OSError):
        os.chmod(path, stat.S_IRWXU)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, onerror=_make_removable)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def wipe_directory(path: str) -> None:
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.chmod(entry.path, stat.S_IRWXU)
            shutil.rmtree(entry.path, onerror=_make_removable)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def sysv_ipc_ids() -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {}
    for kind in SYSVIPC:
        try:
            with open(f"/proc/sysvipc/{kind}") as table:
                rows = table.read().splitlines()[1:]
        except OSError:
            rows = []
        ids[kind] = [int(row.split()[1]) for row in rows if row.strip()]
    return ids


def remove_sysv_ipc() -> None:
    removers = {"shm": libc.shmctl, "msg": libc.msgctl, "sem": libc.semctl}
    for kind, ipc_ids in sysv_ipc_ids().items():
        for ipc_id in ipc_ids:
            if kind == "sem":
                removers[kind](ipc_id, 0, IPC_RMID)
            else:
                removers[kind](ipc_id, IPC_RMID, None)


def remove_message_queues() -> None:
    if os.path.isdir(MQUEUE_DIR):
        for name in os.listdir(MQUEUE_DIR):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(MQUEUE_DIR, name))


def leftovers() -> list[str]:
    """Everything that would let one run reach the next; empty means provably clean."""
    problems = []
    pids = other_pids()
    if pids:
        problems.append(f"processes alive: {pids[:10]}")
    scratch = os.listdir(SCRATCH)
    if scratch:
        problems.append(f"scratch not empty: {sorted(scratch)[:10]}")
    if os.path.isdir(MQUEUE_DIR) and os.listdir(MQUEUE_DIR):
        problems.append("message queues left")
    ipc = {kind: ids for kind, ids in sysv_ipc_ids().items() if ids}
    if ipc:
        problems.append(f"sysv ipc left: {ipc}")
    return problems


# --------------------------------------------------------------------------- the runner process


class Runner:
    """A pre-spawned language runner: started after a clean reset, it waits on fd 3 for the go.

    Starting the interpreter is most of a short run's cost, so it is paid while the container is
    idle instead of while a caller waits.
    """

    def __init__(self, command: list[str]) -> None:
        stdin_r, self.stdin_w = os.pipe2(os.O_CLOEXEC)
        self.stdout_r, stdout_w = os.pipe2(os.O_CLOEXEC)
        self.stderr_r, stderr_w = os.pipe2(os.O_CLOEXEC)
        control_r, self.control_w = os.pipe2(os.O_CLOEXEC)
        self.pid = os.posix_spawn(
            command[0],
            command,
            RUN_ENV,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin_r, 0),
                (os.POSIX_SPAWN_DUP2, stdout_w, 1),
                (os.POSIX_SPAWN_DUP2, stderr_w, 2),
                (os.POSIX_SPAWN_DUP2, control_r, 3),
            ],
            setsid=True,
        )
        for fd in (stdin_r, stdout_w, stderr_w, control_r):
            os.close(fd)
        self.pidfd = os.pidfd_open(self.pid)
        self.spawned_at = time.monotonic()

    def close(self) -> None:
        for fd in (self.stdin_w, self.stdout_r, self.stderr_r, self.control_w, self.pidfd):
            if fd >= 0:  # -1 marks one already closed: its number may belong to another file now
                with contextlib.suppress(OSError):
                    os.close(fd)


class Capture:
    """Keeps at most `limit` bytes of a stream and notes whether more was thrown away."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, data: bytes) -> None:
        room = self.limit - self.size
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            self.chunks.append(data)
            self.size += len(data)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def read_oom_kills() -> int:
    try:
        with open("/sys/fs/cgroup/memory/memory.oom_control") as control:
            for line in control:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.events") as events:
            for line in events:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Execution:
    """One run: feed stdin, capture output, stop at exit, timeout or cancel."""

    def __init__(self, runner: Runner, channel: Channel, request: dict) -> None:
        self.runner = runner
        self.channel = channel
        self.request = request
        self.stdout = Capture(int(request["output_limit"]))
        self.stderr = Capture(int(request["output_limit"]))
        self.stdin = memoryview((request.get("stdin") or "").encode())
        self.exit_status: int | None = None
        self.timed_out = False
        self.cancelled = False

    def start(self) -> None:
        with open(CODE_PATH, "w", encoding="utf-8") as code_file:
            code_file.write(self.request["code"])
        os.close(self.runner.control_w)  # end of file on fd 3 is the runner's go
        self.runner.control_w = -1
        os.set_blocking(self.runner.stdin_w, False)
        if not self.stdin:
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
        except OSError:  # the script closed its stdin: what it did not read is dropped
            self.stdin = memoryview(b"")
            written = 0
        self.stdin = self.stdin[written:]
        if not self.stdin:
            self._close_stdin()

    def wait(self) -> float:
        """Pump the pipes until the script's main process ends; returns its duration in seconds."""
        started = time.monotonic()
        deadline = started + float(self.request["timeout_s"])
        poller = select.poll()
        open_pipes = {self.runner.stdout_r: self.stdout, self.runner.stderr_r: self.stderr}
        for fd in open_pipes:
            poller.register(fd, select.POLLIN)
        poller.register(self.runner.pidfd, select.POLLIN)
        poller.register(0, select.POLLIN)
        if self.runner.stdin_w >= 0:
            poller.register(self.runner.stdin_w, select.POLLOUT)
        while self.exit_status is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.timed_out = True
                break
            for fd, events in poller.poll(remaining * 1000):
                self._on_event(poller, open_pipes, fd, events)
            if self.cancelled:
                break
        duration = time.monotonic() - started
        sweep_processes()
        self._drain(open_pipes)
        return duration

    def _on_event(self, poller: select.poll, pipes: dict, fd: int, events: int) -> None:
        if fd in pipes:
            data = os.read(fd, 1 << 16)
            if data:
                pipes[fd].add(data)
            else:
                poller.unregister(fd)
        elif fd == self.runner.pidfd:
            _, status = os.waitpid(self.runner.pid, 0)
            self.exit_status = status
        elif fd == 0:
            self._on_control()
        elif fd == self.runner.stdin_w:
            self._write_stdin()
            if self.runner.stdin_w < 0:
                poller.unregister(fd)

    def _on_control(self) -> None:
        self.channel.feed()
        if self.channel.closed:
            self.cancelled = True
            return
        while (frame := self.channel.next_frame()) is not None:
            if frame.get("type") == "cancel" and frame.get("id") == self.request.get("id"):
                self.cancelled = True

    def _drain(self, pipes: dict) -> None:
        """After the sweep every writer is gone, so what is left in the pipes is finite."""
        for fd, capture in pipes.items():
            os.set_blocking(fd, False)
            while True:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not data:
                    break
                capture.add(data)

    def exit_code(self) -> int:
        status = self.exit_status
        if status is None:
            return 137  # killed by the agent: 128 + SIGKILL, as a shell reports it
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.waitstatus_to_exitcode(status)


# --------------------------------------------------------------------------- the agent


class Agent:
    def __init__(self, channel: Channel, language: dict) -> None:
        self.channel = channel
        self.language = language
        self.runner: Runner | None = None
        self.runs = 0

    def spawn_runner(self) -> None:
        self.runner = Runner(self.language["runner"])

    def handle(self, frame: dict) -> None:
        kind = frame.get("type")
        if kind == "run":
            self.run(frame)
        elif kind == "ping":
            self.channel.send({"type": "pong", "runs": self.runs, "runner": self.runner_alive()})
        elif kind == "cancel":
            pass  # the run it meant has already ended: nothing to stop, and nothing to answer
        elif kind == "check":
            problems = leftovers()
            if not self.runner_alive():
                problems.append("runner not alive")
            self.channel.send({"type": "check", "clean": not problems, "problems": problems})
        else:
            self.channel.send({"type": "error", "message": f"unknown frame type {kind!r}"})

    def runner_alive(self) -> bool:
        if self.runner is None:
            return False
        ready, _, _ = select.select([self.runner.pidfd], [], [], 0)
        return not ready

    def run(self, request: dict) -> None:
        if self.runner is None or not self.runner_alive():
            self.reset()  # a runner that died while idle is replaced before the run
        assert self.runner is not None
        runner_age_ms = (time.monotonic() - self.runner.spawned_at) * 1000
        oom_before = read_oom_kills()
        execution = Execution(self.runner, self.channel, request)
        execution.start()
        duration = execution.wait()
        self.runs += 1
        self.channel.send(
            {
                "type": "result",
                "id": request.get("id"),
                "stdout": execution.stdout.text(),
                "stderr": execution.stderr.text(),
                "exit_code": execution.exit_code(),
                "duration_s": duration,
                "timed_out": execution.timed_out,
                "cancelled": execution.cancelled,
                "memory_exceeded": read_oom_kills() > oom_before,
                "output_truncated": execution.stdout.truncated or execution.stderr.truncated,
                "runner_age_ms": runner_age_ms,
            }
        )
        self.reset(report=True)

    def reset(self, report: bool = False) -> None:
        """Bring the container back to its clean state, prove it, then pre-spawn the next runner."""
        started = time.monotonic()
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        swept = sweep_processes()
        remove_sysv_ipc()
        remove_message_queues()
        wipe_directory(SCRATCH)
        problems = leftovers() if swept else ["processes survived the sweep"]
        reset_ms = (time.monotonic() - started) * 1000
        if report:
            self.channel.send(
                {"type": "reset", "clean": not problems, "problems": problems, "reset_ms": reset_ms}
            )
        if not problems:
            self.spawn_runner()


def load_language() -> dict:
    with open(CONFIG_PATH) as config:
        language = json.load(config)
    command = language["runner"]
    command[0] = shutil.which(command[0]) or command[0]  # posix_spawn wants a path, not a name
    return language


def main() -> int:
    harden_self()
    channel = Channel()
    language = load_language()
    agent = Agent(channel, language)
    agent.reset()
    channel.send(
        {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "language": language["name"],
            "version": language.get("version") or sys.version.split()[0],
            "clean": agent.runner is not None,
        }
    )
    while True:
        frame = channel.receive()
        if frame is None:
            return 0
        agent.handle(frame)


if __name__ == "__main__":
    sys.exit(main())
