"""The fork server ("zygote") of a warm interpreter, as the agent drives it.

Python's runner imports numpy, pandas and matplotlib before a run arrives: about a second of CPU.
Spawning a fresh runner per run paid that second again after every run. The zygote is started
once per container (and again only when a run has tampered with it): it imports the preload
list, then forks a fresh runner on request, which costs a few milliseconds. The zygote side is
the language's runner started with `--zygote` (`python/runner.py`).

Why it keeps the proof of clean:
- It never runs a program and never sees a run's code, stdin or output; it only forks. A forked
  runner gets the hygiene of an exec'd one (its stdio, a new session, the recorded attributes,
  cwd, environment, no other descriptor) before it says ready; it stays non-dumpable until its
  go (it may wait beside a run of the bare runner, agent.py) and is an ordinary process after.
- It is non-dumpable (PR_SET_DUMPABLE 0), so a run can neither ptrace it nor read or write its
  memory or descriptors through /proc; its two control pipes are held by the agent and by it only.
- A run has its uid, so it can kill, stop, renice, prlimit, re-affine or re-prioritise it. After
  every run the agent asks it for its process attributes and compares them with what it reported
  when it got ready (as the agent does for itself, cleanup.process_attributes); a zygote that is
  dead, stopped, silent or changed is killed and replaced before the next runner is forked.
- Sweeps spare it: it sends the sweep's kill(-1) itself (cleanup.sweep_processes), which reaches
  every other process atomically; when it cannot, the agent's own kill(-1) takes it too.
- A runner is forked twice (zygote, middle, runner) so that it is the agent's child, as an exec'd
  runner is: the agent waits for it, and its usage counts in the agent's RUSAGE_CHILDREN.
- Its stdio and control pipes travel as FIFOs created in the scratch after the proof of clean,
  opened by both sides and unlinked before the runner is handed out: no socket ever shows in the
  container's tables, and the scratch is as empty as before.
Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time

import protocol
from cleanup import changed_attributes
from execution import READY_TIMEOUT_S, Runner, _exec_child, open_pidfd, proc_stat

FORK_DIR = f"{protocol.SCRATCH}/.warmbox-fork"
# (name, the agent's open flags); the runner opens the other end. The agent holds the runner's
# input ends read-write, so that neither side's open blocks; closing its descriptor is still the
# end of file the runner waits for (the agent never reads them).
FIFOS = (
    ("stdin", os.O_RDWR),
    ("stdout", os.O_RDONLY | os.O_NONBLOCK),
    ("stderr", os.O_RDONLY | os.O_NONBLOCK),
    ("go", os.O_RDWR),
    ("report", os.O_RDONLY | os.O_NONBLOCK),
)
ANSWER_TIMEOUT_S = 1.0  # a zygote slower than this is treated as tampered with and replaced


class Zygote:
    """One fork-server process: started with the runner's command plus `--zygote`, it talks JSON
    lines over two pipes (fd 3 from the agent, fd 4 to the agent); its stdio is /dev/null."""

    def __init__(self, spec: dict, attributes: dict) -> None:
        command_r, self.commands = os.pipe2(os.O_CLOEXEC)
        self.answers, answer_w = os.pipe2(os.O_CLOEXEC)
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        child_fds = (null, null, null, command_r, answer_w)
        self.pid = os.fork()
        if self.pid == 0:
            _exec_child({**spec, "command": [*spec["command"], "--zygote"]}, attributes, child_fds)
        for fd in {null, command_r, answer_w}:
            os.close(fd)
        self.pidfd = open_pidfd(self.pid)
        self.buffer = b""
        self.dead = False
        self.baseline: dict | None = None  # its attributes when it got ready

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> bool:
        answer = self._answer(timeout_s)
        self.baseline = answer.get("attributes") if answer else None
        return self.baseline is not None

    def usable(self) -> bool:
        """Alive and not stopped (a stopped zygote would leave every question unanswered)."""
        if self.dead:
            return False
        try:
            state = proc_stat(self.pid)[0]
        except (OSError, IndexError):
            state = "X"
        if state in ("T", "t", "Z", "X"):
            self.dead = True
        return not self.dead

    def ask(self, message: dict, timeout_s: float = ANSWER_TIMEOUT_S) -> dict | None:
        """One command, one answer; None (and the zygote counts as dead) when it cannot answer."""
        if not self.usable():
            return None
        try:
            os.write(self.commands, json.dumps(message).encode() + b"\n")
        except OSError:
            self.dead = True
            return None
        return self._answer(timeout_s)

    def _answer(self, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            readable = remaining > 0 and select.select([self.answers], [], [], remaining)[0]
            chunk = os.read(self.answers, 1 << 16) if readable else b""
            if not chunk:
                self.dead = True
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self.dead = True
            return None
        return answer

    def problems(self) -> list[str]:
        """What a run changed in the zygote; empty when it is as it was when it got ready."""
        answer = self.ask({"op": "attributes"})
        if answer is None or self.baseline is None:
            return ["fork server dead, stopped or not answering"]
        changed = changed_attributes(self.baseline, answer.get("attributes") or {})
        return [f"fork server attributes changed: {changed}"] if changed else []

    def stop(self) -> None:
        """Kill and reap it (the agent is its parent), and close the pipes."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.dead = True
        for fd in (self.commands, self.answers, self.pidfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.commands = self.answers = self.pidfd = -1


class ForkServer:
    """The agent's handle on its zygote: started on demand, checked after every run, replaced
    when a run changed it, asked for runners and for the sweep's kill(-1)."""

    def __init__(self, spec: dict, attributes: dict) -> None:
        self.spec = spec
        self.attributes = attributes
        self.zygote: Zygote | None = None
        self.replaced = 0  # how many zygotes were replaced after a run changed them

    def spared_pid(self) -> int:
        zygote = self.zygote
        return zygote.pid if zygote is not None and not zygote.dead else 0

    def kill_others(self) -> bool:
        """kill(-1, SIGKILL) sent by the zygote; False when it could not (the caller then kills
        everything itself, the zygote included)."""
        zygote = self.zygote
        if zygote is None:
            return False
        answer = zygote.ask({"op": "kill"})
        if answer is None or not answer.get("killed"):
            zygote.dead = True
            return False
        return True

    def problems(self) -> list[str]:
        return self.zygote.problems() if self.zygote is not None else []

    def ensure(self) -> bool:
        """After a proven-clean reset: keep the zygote if it is unchanged, else start a new one
        (its pre-imports again, the only time they are paid). True when one is ready."""
        if self.zygote is not None and self.zygote.problems():
            self.zygote.stop()
            self.zygote = None
            self.replaced += 1
        if self.zygote is None or self.zygote.dead:
            if self.zygote is not None:
                self.zygote.stop()
            self.zygote = Zygote(self.spec, self.attributes)
            if not self.zygote.wait_ready():
                self.zygote.stop()
                self.zygote = None
                return False
        return True

    def fork_runner(self) -> Runner | None:
        """A fresh runner forked from the zygote, or None when the zygote failed."""
        if not self.ensure() or self.zygote is None:
            return None
        agent_ends: list[int] = []
        answer = None
        try:
            paths = _make_fifos()
            for path, (_, flags) in zip(paths, FIFOS, strict=True):
                agent_ends.append(os.open(path, flags | os.O_CLOEXEC))
            request = {"op": "fork", "fifos": paths, "attributes": self.attributes}
            answer = self.zygote.ask({**request, "env": self.spec["env"], "cwd": self.spec["cwd"]})
        except OSError:
            answer = None
        finally:
            _remove_fifos()
        pid = int(answer.get("pid", 0)) if answer else 0
        if pid <= 0:
            for fd in agent_ends:
                os.close(fd)
            return None
        return Runner.adopt(pid, *agent_ends)


def _make_fifos() -> list[str]:
    os.mkdir(FORK_DIR, 0o700)
    paths = [f"{FORK_DIR}/{name}" for name, _ in FIFOS]
    for path in paths:
        os.mkfifo(path, 0o600)
    return paths


def _remove_fifos() -> None:
    """Once both sides hold their ends the names go: the run finds the scratch empty."""
    for name, _ in FIFOS:
        with contextlib.suppress(OSError):
            os.unlink(f"{FORK_DIR}/{name}")
    with contextlib.suppress(OSError):
        os.rmdir(FORK_DIR)
