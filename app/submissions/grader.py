"""Grading: run a program once per test case and judge each run; compile once, run many.

All the cases of a submission are graded in one container lease (`SandboxManager.grade`: one
GRADE frame, a CASE frame back per case, one reset and proof of clean at the end), and each case
is still a fresh runner process on a freshly wiped scratch: before every case but the first the
agent kills every process, wipes the scratch and proves it clean (sandbox_images/agent/cases.py),
so nothing case 1 writes or leaves running is visible to case 2. For a compiled language the first
case compiles and every later case unpacks that build. A compile error ends the grading before
any case is judged. When a container fails part-way, the case it was on is an internal error and
the rest are graded in another lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from app.core.errors import AppError, PoolExhaustedError
from app.sandbox.types import (
    CaseCallback,
    CompileResult,
    GradeCase,
    GradeRequest,
    GradeResult,
    RunFile,
    RunResult,
)
from app.submissions.compare import outputs_match
from app.submissions.models import CompareMode, Verdict

EXHAUSTED_BACKOFF_S = 0.02
GradeFunction = Callable[[GradeRequest, str, CaseCallback], GradeResult]


@dataclass(frozen=True)
class Program:
    """What every case runs, and how its output is judged."""

    submission_id: str
    user_id: str
    language: str
    code: str
    files: tuple[RunFile, ...]
    compare: CompareMode
    abs_tol: float
    rel_tol: float
    memory_mb: int
    output_limit_bytes: int
    stored_output_bytes: int


@dataclass(frozen=True)
class Case:
    number: int
    stdin: str
    expected_output: str
    args: tuple[str, ...]
    timeout_s: float


@dataclass(frozen=True)
class CaseOutcome:
    number: int
    verdict: Verdict
    time_ms: float | None
    memory_kb: int | None
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool


@dataclass
class Grading:
    """What grading produced so far; `cancelled` when it stopped on request."""

    outcomes: list[CaseOutcome] = field(default_factory=list)
    compile: CompileResult | None = None
    compile_failed: bool = False
    cancelled: bool = False

    @property
    def passed(self) -> int:
        return sum(outcome.verdict is Verdict.ACCEPTED for outcome in self.outcomes)

    def verdict(self) -> Verdict:
        """The first case's verdict that is not accepted, in case order (or accepted)."""
        if self.compile_failed:
            return Verdict.COMPILATION_ERROR
        for outcome in self.outcomes:
            if outcome.verdict is not Verdict.ACCEPTED:
                return outcome.verdict
        return Verdict.ACCEPTED


def judge(program: Program, case: Case, result: RunResult) -> Verdict:
    """One run's verdict; limits first, then the exit code, then the output.

    The sandbox cuts output at the limit but lets the program go on, so a program that floods
    its output usually also runs out of time: the output limit, crossed first, decides."""
    if result.compile is not None and not result.compile.success:
        return Verdict.COMPILATION_ERROR
    if result.output_truncated:
        return Verdict.OUTPUT_LIMIT_EXCEEDED
    peak_kb = result.usage.peak_memory_kb if result.usage else 0
    if result.memory_exceeded or peak_kb > program.memory_mb * 1024:
        return Verdict.MEMORY_LIMIT_EXCEEDED
    if result.timed_out:
        return Verdict.TIME_LIMIT_EXCEEDED
    if result.exit_code != 0:
        return Verdict.RUNTIME_ERROR
    matched = outputs_match(
        program.compare,
        case.expected_output,
        result.stdout,
        abs_tol=program.abs_tol,
        rel_tol=program.rel_tol,
    )
    return Verdict.ACCEPTED if matched else Verdict.WRONG_ANSWER


def _cut(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", "ignore"), True


def outcome_of(program: Program, case: Case, result: RunResult) -> CaseOutcome:
    stdout, stdout_cut = _cut(result.stdout, program.stored_output_bytes)
    stderr, stderr_cut = _cut(result.stderr, program.stored_output_bytes)
    usage = result.usage
    return CaseOutcome(
        number=case.number,
        verdict=judge(program, case, result),
        time_ms=usage.wall_time_ms if usage else round(result.duration_s * 1000, 3),
        memory_kb=usage.peak_memory_kb if usage else None,
        exit_code=result.exit_code,
        stdout=stdout,
        stderr=stderr,
        truncated=result.output_truncated or stdout_cut or stderr_cut,
    )


def internal_error(case: Case, message: str) -> CaseOutcome:
    return CaseOutcome(case.number, Verdict.INTERNAL_ERROR, None, None, None, "", message, False)


def request_for(program: Program, cases: list[Case], build: bytes | None) -> GradeRequest:
    """The cases' lease; the submission id is the run id, so a cancel finds the running case."""
    return GradeRequest(
        code=program.code,
        cases=tuple(GradeCase(case.stdin, case.args, case.timeout_s) for case in cases),
        language=program.language,
        output_limit_bytes=program.output_limit_bytes,
        run_id=program.submission_id,
        files=program.files,
        build=build,
    )


class Grader:
    """Grades the cases of one submission through `grade` (the sandbox manager's): all of them in
    one container lease, or, when a container fails part-way, the rest in the next. `wait_for_room`
    holds each lease back while the pool has no container to spare for it."""

    def __init__(
        self,
        grade: GradeFunction,
        *,
        should_stop: Callable[[], bool],
        wait_for_room: Callable[[str], None] = lambda _language: None,
    ) -> None:
        self._grade = grade
        self._should_stop = should_stop
        self._wait_for_room = wait_for_room

    def grade(
        self,
        program: Program,
        cases: list[Case],
        on_case: Callable[[CaseOutcome], None] = lambda _: None,
    ) -> Grading:
        grading = Grading()
        build: bytes | None = None
        pending = list(cases)
        while pending and not (grading.cancelled or grading.compile_failed):
            if self._should_stop():
                grading.cancelled = True
                break
            judged = partial(self._judge, grading, program, pending, on_case)
            before = len(grading.outcomes)
            try:
                graded = self._lease(request_for(program, pending, build), program.user_id, judged)
            except AppError as exc:  # the container failed: the case it was on cannot be judged
                done = len(grading.outcomes) - before
                if done < len(pending):
                    self._record(grading, internal_error(pending[done], exc.message), on_case)
                pending = pending[done + 1 :]
                continue
            if graded is None:  # stopped while waiting for a container
                grading.cancelled = True
                break
            build = graded.build or build
            if not graded.results and not grading.cancelled:  # never loop on a refusal
                reason = graded.error or "the sandbox graded no case"
                self._record(grading, internal_error(pending[0], reason), on_case)
                pending = pending[1:]
            pending = pending[len(graded.results) :]
        return grading

    def _judge(
        self,
        grading: Grading,
        program: Program,
        pending: list[Case],
        on_case: Callable[[CaseOutcome], None],
        index: int,
        result: RunResult,
    ) -> None:
        """One case's result as it arrives from the container (on the pool's thread)."""
        if result.cancelled:
            grading.cancelled = True
        elif not self._compile_failed(grading, result):
            self._record(grading, outcome_of(program, pending[index], result), on_case)

    @staticmethod
    def _record(
        grading: Grading, outcome: CaseOutcome, on_case: Callable[[CaseOutcome], None]
    ) -> None:
        grading.outcomes.append(outcome)
        on_case(outcome)

    @staticmethod
    def _compile_failed(grading: Grading, result: RunResult) -> bool:
        """Keep the first compile report; a failed compile ends the grading with no case run."""
        if result.compile is not None and grading.compile is None:
            grading.compile = result.compile
            grading.compile_failed = not result.compile.success
        return grading.compile_failed

    def _lease(
        self, request: GradeRequest, user_id: str, on_case: CaseCallback
    ) -> GradeResult | None:
        """Every container may be busy with synchronous runs: the lease waits its turn for one
        (None when grading was stopped meanwhile)."""
        while True:
            self._wait_for_room(request.language)
            try:
                return self._grade(request, user_id, on_case)
            except PoolExhaustedError:
                if self._should_stop():
                    return None
                time.sleep(EXHAUSTED_BACKOFF_S)
