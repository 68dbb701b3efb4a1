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
  objects are removed, and the clean state is verified before the agent reports it, including
  the agent's own process attributes and the network namespace's sockets (cleanup.py).
- The next runner is spawned only after that verification, so nothing of one run survives into
  the process that receives the next. Where a runner's start is long (node, the JVM), the one for
  the run after next is started then too and parked beside the next run, which can neither read
  nor trace it; it serves only if it is exactly as started (execution.py, parked_problems).
Only the standard library is used; the agent must start in any image that has python3.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import re
import resource
import select
import shutil
import signal
import sys
import time

# Run with -I, the interpreter leaves the script's own directory off sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases
import cleanup
import protocol
import session
from cleanup import clean_container, leftovers, process_attributes, socket_counters
from execution import (
    Execution,
    ExitNotices,
    Runner,
    cpu_ms,
    parked_problems,
    protected_attributes,
    read_oom_kills,
)
from protocol import RUN_ENV
from workspace import WorkspaceError, pack_build, place_files, unpack_build, write_file
from zygote import ForkServer

CONFIG_PATH = "/opt/warmbox/language.json"
SOURCES_HASH_PATH = "/opt/warmbox/source-hash"
PR_SET_DUMPABLE = 4

libc = ctypes.CDLL(None, use_errno=True)


# --------------------------------------------------------------------------- channel to the pool


class Channel:
    """Protocol frames over fd 0 (from the pool) and fd 1 (to the pool)."""

    def __init__(self) -> None:
        self.decoder = protocol.FrameDecoder()
        self.closed = False

    def send(self, message: dict) -> None:
        view = memoryview(protocol.encode(message))
        while view:
            written = os.write(1, view)
            view = view[written:]

    def feed(self) -> None:
        """Read what is available on fd 0 (call when poll says it is readable)."""
        chunk = os.read(0, 1 << 16)
        if not chunk:
            self.closed = True
        self.decoder.feed(chunk)

    def next_frame(self) -> dict | None:
        return self.decoder.next_frame()

    def wait(self, timeout_s: float) -> None:
        """Until a frame is here (or the channel closed), at most `timeout_s` seconds."""
        if self.decoder.pending() or self.closed:
            return
        select.select([0], [], [], timeout_s)

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


# --------------------------------------------------------------------------- the agent


class Language:
    """The image's descriptor (language.json), resolved once at start.

    Three shapes: an interpreter with a warm `runner` (python, javascript, bash); a warm `runner`
    that compiles in-process and reports on fd 4 (typescript, java: `compiled` and no `compile`);
    and a `compile` command the agent runs, then a cold `run` command (c, cpp, go, rust), both in
    the exec scratch.
    """

    def __init__(self, descriptor: dict) -> None:
        self.descriptor = descriptor
        self.name = str(descriptor["name"])
        self.file = str(descriptor["file"])
        self.compile = _resolved(descriptor.get("compile"))
        self.run = _resolved(descriptor.get("run"))
        self.runner = _resolved(descriptor.get("runner"))
        if self.runner and "preload" in descriptor:
            # The pool may replace the descriptor's list (setting SANDBOX_PYTHON_PRELOAD).
            names = os.environ.get("WARMBOX_PRELOAD", ",".join(descriptor["preload"]))
            self.runner.append(f"--preload={names}")
        self.compiles_in_runner = bool(descriptor.get("compiled")) and not self.compile
        # A runner that can fork fresh copies of itself after its pre-imports (zygote.py).
        # The pool may turn it off (setting SANDBOX_PYTHON_FORK_SERVER).
        enabled = os.environ.get("WARMBOX_FORK_SERVER", "1") != "0"
        self.fork_server = bool(descriptor.get("fork_server") and self.runner) and enabled
        # Python with pre-imports: a second fork server without them forks the runner of every
        # script that names no installed package; the pool may turn it off
        # (SANDBOX_PYTHON_BARE_RUNNER).
        self.bare_runner: list[str] | None = None
        self.packages: re.Pattern[str] | None = None
        preloads = self.runner[-1][len("--preload=") :] if self.runner else ""
        wanted = os.environ.get("WARMBOX_BARE_RUNNER", "1") != "0"
        if self.fork_server and descriptor.get("bare_runner") and preloads and wanted:
            self.bare_runner = [*self.runner[:-1], "--preload="]
            self.packages = installed_packages()
        # A runner with a long start-up whose next copy is started ahead and parked (execution.py).
        self.parks = bool(descriptor.get("parked") and self.runner)
        # A runner that can say when it ends (protocol.EXIT_NOTICES): its go carries a token, ""
        # when the pool turned notices off (setting SANDBOX_EXIT_NOTICES).
        self.exit_notice = bool(descriptor.get("exit_notice") and self.runner)
        self.notices_wanted = os.environ.get("WARMBOX_EXIT_NOTICES", "1") != "0"
        # A language whose every process is its runner, which forbids itself writes under /proc
        # when it starts (cleanup.forbid_proc_writes); the agent does it for every other process.
        self.restricts_itself = bool(
            descriptor.get("restricts_itself") and self.runner and not self.compile and not self.run
        )
        self.build_outputs = list(descriptor.get("build_outputs", []))
        self.workdir = protocol.EXEC_SCRATCH if self.compile else protocol.SCRATCH
        self.env = {**RUN_ENV, **descriptor.get("env", {})}

    def spec(self, command: list[str]) -> dict:
        return {
            "command": command,
            "env": self.env,
            "cwd": self.workdir,
            "restricts_itself": self.restricts_itself,
        }

    def wants_packages(self, code: str) -> bool:
        """Whether a script names an installed package anywhere (an import, a string, a comment):
        such a script gets the runner with the pre-imports, every other one the bare runner.
        A script that reaches a package in a way this misses imports it itself, as `python3`
        would: slower, never different."""
        return self.packages is None or self.packages.search(code) is not None


def installed_packages() -> re.Pattern[str] | None:
    """A pattern matching, as a whole word, the top-level name of every package installed beside
    the standard library (site.getsitepackages(): Debian's dist-packages); None when there is
    none to find, which sends every script to the runner with the pre-imports."""
    import site

    names = set()
    for directory in site.getsitepackages():
        with contextlib.suppress(OSError):
            for entry in os.listdir(directory):
                name = entry.split(".", 1)[0].split("-", 1)[0]
                if name.isidentifier() and not entry.endswith((".pth", ".txt")):
                    names.add(name)
    if not names:
        return None
    return re.compile(r"\b(?:" + "|".join(sorted(map(re.escape, names))) + r")\b")


def _resolved(command: list[str] | None) -> list[str] | None:
    """execve wants a path, not a name."""
    if not command:
        return None
    return [shutil.which(command[0]) or command[0], *command[1:]]


def children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


class Agent:
    def __init__(self, channel: Channel, language: Language) -> None:
        self.channel = channel
        self.language = language
        self.runner: Runner | None = None
        self.ready = False
        self.runs = 0
        self.session: session.Session | None = None  # issue 13: a session holds the container
        # As the container started: the reference every later proof of clean compares with.
        self.attributes = {**process_attributes(), "sockets": socket_counters()}
        cleanup.proc_ruleset = cleanup.proc_write_ruleset()  # what every child it starts gets
        self.fork_server: ForkServer | None = None
        self.parked: Runner | None = None  # the next run's runner, started ahead
        self.parked_baseline: dict | None = None  # a runner's attributes before any run
        self.parked_refused = 0
        self.bare: Runner | None = None  # python's bare runner, ready beside self.runner
        # Each kind's attributes as seen from outside when its first runner got ready, before any
        # run: what a runner kept across a run of the other kind is compared with.
        self.kept_baselines: dict[str, dict] = {}
        self.kept_refused = 0
        self.bare_server: ForkServer | None = None
        self.notices = ExitNotices() if language.exit_notice and language.notices_wanted else None
        if language.fork_server:
            self.fork_server = ForkServer(language.spec(language.runner or []), self.attributes)
            cleanup.fork_server = self.fork_server  # sweeps spare it and let it kill the others
        if language.bare_runner:
            # Spared by a sweep that finds nothing else alive; the fork server's kill(-1) takes it
            # too, and it is started again (a bare interpreter: tens of milliseconds).
            self.bare_server = ForkServer(language.spec(language.bare_runner), self.attributes)
            cleanup.bare_server = self.bare_server

    def spawn_runner(self, park_after_s: float = 0.0) -> None:
        """The next run's runner, ready; where the language parks, the one after it is started
        too: at once, or (`park_after_s`) once the next frame came or that long has passed, so a
        runtime's start (node's, a JVM's: tens of milliseconds of CPU) does not share the cores
        with the answer of the run just ended, still on its way through the host."""
        if not self.language.runner:
            return
        runner = self._kept(self.runner, "runner") or self._unpark()  # ready already
        self.runner = None
        if runner is None:
            runner = self.fork_server.fork_runner() if self.fork_server is not None else None
            if runner is None:  # no fork server, or it failed: start the interpreter itself
                spec = self.language.spec(self.language.runner)
                runner = Runner(spec, self.attributes, warm=True)
            runner.wait_ready()  # a runner that never gets ready is replaced before the run
        self.runner = runner
        if self.language.bare_runner:
            self._spawn_bare()
        cleanup.idle_pids = {idle.pid for idle in (self.runner, self.bare) if idle is not None}
        if self.language.parks:
            if park_after_s > 0:
                self.channel.wait(park_after_s)
            self._park(runner)

    def _spawn_bare(self) -> None:
        """Python's bare runner beside the one with the pre-imports, both ready before the next
        frame is read: whichever a run does not take waits through it, non-dumpable, and is
        checked after it."""
        bare, self.bare = self._kept(self.bare, "bare"), None
        if bare is None and self.bare_server is not None:
            bare = self.bare_server.fork_runner()
            if bare is None or not bare.wait_ready():
                if bare is not None:
                    bare.kill()
                return  # every script takes the other runner until the next reset
        self.bare = bare
        for kind, runner in (("runner", self.runner), ("bare", bare)):
            if kind not in self.kept_baselines and runner is not None:
                baseline = protected_attributes(runner.pid)
                if baseline is None:  # the kernel did not hide it: no runner waits beside a run
                    self._drop_bare()
                    return
                self.kept_baselines[kind] = baseline

    def _drop_bare(self) -> None:
        """No bare runner in this container from now on: every run takes the other one."""
        self.language.bare_runner = None
        if self.bare is not None:
            cleanup.idle_pids.discard(self.bare.pid)
            self.bare.kill()
            self.bare = None
        if self.bare_server is not None and self.bare_server.zygote is not None:
            self.bare_server.zygote.stop()
        self.bare_server = cleanup.bare_server = None

    def _kept(self, runner: Runner | None, kind: str) -> Runner | None:
        """A ready runner that the last run did not take, if it is exactly as it was (alive, not
        stopped, still non-dumpable, the attributes of its kind's first runner, nothing written);
        else it is killed, and None."""
        if runner is None:
            return None
        if runner.pid in cleanup.idle_pids:
            problems = parked_problems(runner, self.kept_baselines.get(kind))
            if not problems:
                return runner
            self.kept_refused += 1
        runner.kill()
        return None

    def take_warm_runner(self) -> Runner | None:
        """The runner with the pre-imports, for a session's kernel: from now on it is the
        session's process, which sweeps and proofs no longer spare."""
        runner, self.runner = self.runner, None
        if runner is not None:
            cleanup.idle_pids.discard(runner.pid)
        return runner

    def _take_runner(self, code: str) -> Runner:
        """The runner for this run: the bare one for a script that names no installed package,
        else the one with the pre-imports. The other stays ready and is checked at the reset."""
        bare = self.bare
        if bare is not None and not self.language.wants_packages(code) and bare.poll_exit() is None:
            self.bare = None
            cleanup.idle_pids.discard(bare.pid)
            return bare
        runner = self.take_warm_runner()
        assert runner is not None
        return runner

    def _unpark(self) -> Runner | None:
        """The parked runner, if it is exactly as it was started (execution.parked_problems);
        else it is killed, and None."""
        parked, self.parked = self.parked, None
        cleanup.parked_pid = 0
        if parked is None:
            return None
        ready = parked.wait_ready()
        problems = parked_problems(parked, self.parked_baseline) if ready else ["not ready"]
        if not problems:
            return parked
        self.parked_refused += 1
        parked.kill()
        return None

    def _park(self, current: Runner) -> None:
        """Start the next run's runner now, after a proof of clean; it is not waited for. The
        first runner of the container, started before any run, gives the baseline every parked
        runner is compared with; where the kernel does not make it non-dumpable, nothing parks.
        Nothing parks before the container's first run either: a single-use container has no
        second run, and a new container's start is not slowed by a second runtime starting."""
        if self.parked_baseline is None:
            self.parked_baseline = protected_attributes(current.pid)
            if self.parked_baseline is None:
                self.language.parks = False
                return
        if not self.runs:
            return
        self.parked = Runner(self.language.spec(self.language.runner), self.attributes, warm=True)
        cleanup.parked_pid = self.parked.pid

    def handle(self, frame: dict) -> None:
        kind = frame.get("type")
        if self.session is not None or kind == protocol.SESSION_OPEN:
            self.session = session.handle(self, self.session, frame)
        elif kind == protocol.RUN:
            self.run(frame)
        elif kind == protocol.GRADE:
            cases.grade(self, frame)
        elif kind == protocol.PING:
            self.channel.send(
                {"type": protocol.PONG, "runs": self.runs, "runner": self.runner_alive()}
            )
        elif kind in (protocol.CANCEL, protocol.STDIN):
            pass  # the run it meant has already ended: nothing to stop or feed, nothing to answer
        elif kind == protocol.CHECK:
            problems = leftovers(self.attributes, thorough=True)
            for server in (self.fork_server, self.bare_server):
                if server is not None:
                    problems += server.problems()
            if not self.runner_alive():
                problems.append("runner not alive")
            self.channel.send({"type": protocol.CHECK, "clean": not problems, "problems": problems})
        else:
            self.channel.send({"type": protocol.ERROR, "message": f"unknown frame type {kind!r}"})

    def runner_alive(self) -> bool:
        if not self.language.runner:
            return self.ready  # nothing is pre-spawned: ready once proven clean
        if self.runner is None:
            return False
        if self.runner.pidfd < 0:
            return self.runner.poll_exit() is None
        ready, _, _ = select.select([self.runner.pidfd], [], [], 0)
        return not ready

    def run(self, request: dict) -> None:
        result = self.run_case(request)
        self.channel.send(result)
        self.reset(report=True, park_after_s=_park_delay_s(request))

    def run_case(self, request: dict) -> dict:
        """Run one program (a RUN, or one case of a GRADE) to its RESULT frame, without the reset
        that follows it."""
        if not self.runner_alive():
            self.reset()  # a runner that died while idle is replaced before the run
        result: dict = {"type": protocol.RESULT, "id": request.get("id"), "compile": None}
        oom_before = read_oom_kills()
        try:
            self._prepare(request, result)
            if self.language.compile:
                self._compile(request, result)
            if result.get("compile") is None or result["compile"]["exit_code"] == 0:
                self._execute(request, result)
        except WorkspaceError as exc:
            result.update(stdout="", stderr=f"warmbox: {exc}\n", exit_code=126, duration_s=0.0)
        result["memory_exceeded"] = read_oom_kills() > oom_before
        result.setdefault("build", None)
        self.runs += 1
        return result

    def _prepare(self, request: dict, result: dict) -> None:
        """The program, its files and (given one) the cached build, in the working directory."""
        workdir = self.language.workdir
        place_files(workdir, request.get("files") or [])
        code = str(request.get("code", "")).encode()
        write_file(workdir, self.language.file, code)
        if request.get("build") and self.language.build_outputs:
            try:
                unpack_build(workdir, base64.b64decode(request["build"]))
            except ValueError as exc:
                raise WorkspaceError(f"build refused: {exc}") from exc
            result["compile"] = {"output": "", "exit_code": 0, "duration_s": 0.0, "cached": True}

    def _compile(self, request: dict, result: dict) -> None:
        """Run the compile command in the sandbox, with its own limit and its own output."""
        if result["compile"] is not None:
            return  # a cached build was unpacked
        compiler = Runner(self.language.spec(self.language.compile), self.attributes, warm=False)
        step = Execution(
            compiler, self.channel, request, timeout_s=float(request.get("compile_timeout_s", 30))
        )
        try:
            step.start()
            duration = step.wait()
        finally:
            compiler.close()
        output = step.stdout.text() + step.stderr.text()
        exit_code = step.exit_code()
        if step.timed_out:
            output += "\nwarmbox: the compile step timed out\n"
        result["compile"] = {
            "output": output,
            "exit_code": exit_code,
            "duration_s": duration,
            "cached": False,
        }
        if exit_code != 0:
            result.update(
                stdout="",
                stderr="",
                exit_code=exit_code,
                duration_s=0.0,
                timed_out=step.timed_out,
                cancelled=step.cancelled,
                output_truncated=False,
            )
            return
        self._pack(result)

    def _pack(self, result: dict) -> None:
        build = pack_build(
            self.language.workdir, self.language.build_outputs, protocol.BUILD_MAX_BYTES
        )
        result["build"] = base64.b64encode(build).decode() if build else None

    def _execute(self, request: dict, result: dict) -> None:
        args = [str(arg) for arg in request.get("args") or []]
        cached = bool(result.get("compile"))
        if self.language.run:
            runner = Runner(
                self.language.spec([*self.language.run, *args]), self.attributes, warm=False
            )
            runner_age_ms = 0.0
        else:
            runner = self._take_runner(str(request.get("code", "")))
            runner_age_ms = (time.monotonic() - runner.spawned_at) * 1000
        cpu_before = children_cpu_ms() + cpu_ms(runner.pid)  # the runner's idle start-up
        cleanup.reaped_peak_kb = 0
        token = self.notices.token() if self.notices is not None else ""
        execution = Execution(
            runner,
            self.channel,
            request,
            stdin=str(request.get("stdin") or "").encode(),
            timeout_s=float(request["timeout_s"]),
            compile_timeout_s=(
                float(request.get("compile_timeout_s", 30))
                if self.language.compiles_in_runner and not cached
                else None
            ),
            stream=bool(request.get("stream")),
            interactive=bool(request.get("interactive")),
            notices=self.notices,
            token=token,
        )
        mode = "cached" if cached else "run"
        try:
            execution.start([mode, token, *args] if self.language.exit_notice else [mode, *args])
            duration = execution.wait()
        finally:
            runner.close()
        result.update(
            stdout=execution.stdout.text(),
            stderr=execution.stderr.text(),
            exit_code=execution.exit_code(),
            duration_s=duration,
            timed_out=execution.timed_out,
            cancelled=execution.cancelled,
            output_truncated=execution.stdout.truncated or execution.stderr.truncated,
            runner_age_ms=runner_age_ms,
            exit_noticed=execution.noticed,
            usage={
                "cpu_time_ms": max(0.0, children_cpu_ms() + runner.cpu_at_notice_ms - cpu_before),
                "wall_time_ms": duration * 1000,
                "peak_memory_kb": max(runner.peak_kb, cleanup.reaped_peak_kb),
            },
        )
        if self.language.compiles_in_runner and not cached:
            self._in_runner_compile(execution, result)

    def _in_runner_compile(self, execution: Execution, result: dict) -> None:
        """The compile report a warm runner sent on fd 4 (typescript, java)."""
        report = execution.compile_report
        if report is None:  # it never finished compiling: timed out, cancelled or crashed
            exit_code = execution.exit_code() or 1
            output = execution.stdout.text() + execution.stderr.text()
            if execution.timed_out:
                output += "\nwarmbox: the compile step timed out\n"
            result["compile"] = {
                "output": output,
                "exit_code": exit_code,
                "duration_s": result["duration_s"],
                "cached": False,
            }
            result.update(stdout="", stderr="", duration_s=0.0)
            return
        compile_exit = int(report.get("exit_code", 0))
        result["compile"] = {
            "output": str(report.get("output", "")),
            "exit_code": compile_exit,
            "duration_s": float(report.get("duration_s", 0.0)),
            "cached": False,
        }
        if compile_exit == 0:
            self._pack(result)
        else:
            result["exit_code"] = compile_exit

    def reset(self, report: bool = False, park_after_s: float = 0.0) -> None:
        """Bring the container back to its clean state, prove it, then pre-spawn the next runner
        (and park one, `park_after_s`: see spawn_runner)."""
        started = time.monotonic()
        if self.runner is not None and self.runner.pid not in cleanup.idle_pids:
            self.runner.close()  # used (or swept): the sweep below ends it
            self.runner = None
        problems = clean_container(self.attributes)
        if self.notices is not None:  # nothing of the run is left that holds it open
            self.notices.renew()
        self.ready = not problems
        if report:
            # Reported as soon as it is proven: the pool's hand-off and the caller's next request
            # overlap the runner's start here; a RUN that comes meanwhile waits in the channel.
            reset_ms = (time.monotonic() - started) * 1000
            self.channel.send(
                {
                    "type": protocol.RESET,
                    "clean": not problems,
                    "problems": problems,
                    "reset_ms": reset_ms,
                }
            )
        if not problems:
            self.spawn_runner(park_after_s=park_after_s)


def _park_delay_s(request: dict) -> float:
    """A RUN's `park_delay_ms`, bounded: at most PARK_DELAY_MAX_MS, 0 when unusable."""
    try:
        delay_ms = float(request.get("park_delay_ms") or 0)
    except (TypeError, ValueError):
        return 0.0
    if not delay_ms > 0:  # also NaN
        return 0.0
    return min(delay_ms, protocol.PARK_DELAY_MAX_MS) / 1000


def read_sources_hash() -> str:
    """The hash of the sources this image was built from (build.py bakes it in), "" if none."""
    try:
        with open(SOURCES_HASH_PATH) as baked:
            return baked.read().strip()
    except OSError:
        return ""


def load_language() -> Language:
    with open(CONFIG_PATH) as config:
        return Language(json.load(config))


def main() -> int:
    harden_self()
    channel = Channel()
    language = load_language()
    agent = Agent(channel, language)
    agent.reset()
    channel.send(
        {
            "type": protocol.HELLO,
            "protocol": protocol.VERSION,
            "language": language.name,
            "version": language.descriptor.get("version") or sys.version.split()[0],
            "sources": read_sources_hash(),
            "clean": agent.ready,
        }
    )
    while True:
        frame = channel.receive()
        if frame is None:
            return 0
        agent.handle(frame)


if __name__ == "__main__":
    sys.exit(main())
