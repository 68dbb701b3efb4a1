"""What a run asks for and what it gives back; plain data shared by the pool and its callers.

The fields travel to the agent in the RUN frame and back in the RESULT frame (see
`sandbox_images/agent/protocol.py` for the frame field names).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

# Called from the pool's thread with ("stdout" | "stderr", text) as a live run's output arrives;
# it must not block (the agent's channel is read by the same thread).
OutputCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class RunFile:
    """An extra file placed beside the program; `name` is already checked (no path tricks)."""

    name: str
    content: bytes


@dataclass(frozen=True)
class RunRequest:
    code: str
    language: str = "python"
    stdin: str = ""
    timeout_s: float = 10.0
    output_limit_bytes: int = 64 * 1024
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    args: tuple[str, ...] = ()
    files: tuple[RunFile, ...] = ()
    # Compiled languages: the compile step's own time limit, and a build made earlier from the
    # same image, source, files and flags (a tar archive); with it the agent skips the compile.
    compile_timeout_s: float = 30.0
    build: bytes | None = None
    # Live runs: `stream` sends output to the caller's on_output while the program runs;
    # `interactive` keeps the program's stdin open for send_stdin after `stdin` (until eof).
    stream: bool = False
    interactive: bool = False
    # A caller waits for this run's answer (a synchronous or live run): a container whose
    # language parks (node, the JVM) starts the runner for the run after next this long after
    # the run, or at its next frame, so that runtime's start does not share the cores with the
    # answer on its way out (POOL_PARK_DELAY_MS).
    park_delay_ms: int = 0


@dataclass(frozen=True)
class CompileResult:
    """The compile step of a compiled language, reported apart from the program's output."""

    output: str
    exit_code: int
    duration_s: float
    cached: bool = False

    @property
    def success(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class Usage:
    """What the run's whole process tree used."""

    cpu_time_ms: float
    wall_time_ms: float
    peak_memory_kb: int


@dataclass(frozen=True)
class RunResult:
    stdout: str
    stderr: str
    exit_code: int
    duration_s: float
    timed_out: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False
    cancelled: bool = False
    compile: CompileResult | None = None  # None for interpreted languages
    usage: Usage | None = None
    # The build a successful, uncached compile produced (a tar archive), for the build cache.
    build: bytes | None = None
    # The runner's exit notice ended the run: the answer left before the kernel had torn the
    # runner down (sandbox_images/agent/protocol.py, EXIT_NOTICES). Not part of the API's answer.
    exit_noticed: bool = False

    @property
    def success(self) -> bool:
        compiled = self.compile is None or self.compile.success
        return compiled and self.exit_code == 0 and not (self.timed_out or self.cancelled)


# --------------------------------------------------------------------------- graded submissions


@dataclass(frozen=True)
class GradeCase:
    """One test case's input; the program and the other limits are the GradeRequest's."""

    stdin: str = ""
    args: tuple[str, ...] = ()
    timeout_s: float = 10.0


@dataclass(frozen=True)
class GradeRequest:
    """A program and its cases, graded in one container lease (one GRADE frame): each case a
    fresh runner on a freshly wiped scratch, the container's reset and proof once at the end."""

    code: str
    cases: tuple[GradeCase, ...]
    language: str = "python"
    output_limit_bytes: int = 64 * 1024
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    files: tuple[RunFile, ...] = ()
    compile_timeout_s: float = 30.0
    build: bytes | None = None


# Called on the pool's thread with (index in the request's cases, result) as each case ends.
CaseCallback = Callable[[int, RunResult], None]


@dataclass(frozen=True)
class GradeResult:
    """What one lease graded: the results of the first `len(results)` cases, in order.

    Fewer results than cases: a compile failed or a case was cancelled (see the last result), or
    `error` says why the container stopped early (the caller grades the rest elsewhere)."""

    results: tuple[RunResult, ...]
    build: bytes | None = None
    error: str | None = None
