"""Grading a submission in one lease: every case of a GRADE frame, then one reset.

A graded submission used to be one RUN per case: per case a frame each way, the pool's hand-back
and hand-out, the host's threads and bookkeeping, and a wait for a spare container. Here the pool
sends the program and all its cases in one GRADE frame and the agent answers a CASE frame per case
and a GRADED frame; the pool's reset report (RESET) follows once, after the last case.

Every case still starts from nothing (issue 12's isolation rule): before each case but the first,
the agent does what its reset after a run does (cleanup.clean_container: kill every process,
remove IPC objects and message queues, wipe both scratches, then prove all of it and its own
attributes and sockets unchanged) and forks a fresh runner; then it places the program, its files
and the build again. Nothing a case wrote, left running or set in its interpreter reaches the
next. When that proof fails the agent stops and says why in GRADED `error` (the pool grades the
remaining cases in another container, and the RESET that follows reports the container unclean,
so it is replaced). Standard library only.
"""

from __future__ import annotations

from typing import Any

import protocol

# RUN fields a case takes from the GRADE frame; stdin, args and timeout_s are the case's own.
SHARED_FIELDS = ("code", "files", "output_limit", "compile_timeout_s")


def grade(agent: Any, frame: dict) -> None:
    """Run the GRADE's cases in order, sending a CASE frame after each and GRADED at the end,
    then reset the container once and report it (the agent's RESET)."""
    grade_id = frame.get("id")
    summary: dict = {"type": protocol.GRADED, "id": grade_id, "ran": 0, "build": None}
    summary["error"] = _refusal(frame.get("cases"))
    cases = frame["cases"] if summary["error"] is None else []
    build = frame.get("build")
    for index, case in enumerate(cases):
        if index and not _fresh(agent):
            summary["error"] = "the container could not be proven clean between two cases"
            break
        result = agent.run_case(_case_request(frame, case, build))
        summary["ran"] += 1
        if result.get("build") and not build:
            build = summary["build"] = result["build"]
        agent.channel.send({**result, "type": protocol.CASE, "index": index, "build": None})
        if _ends_grading(result):
            break
    agent.channel.send(summary)
    agent.reset(report=True)


def _refusal(cases: object) -> str | None:
    """Why the GRADE's case list cannot be graded, or None."""
    if not isinstance(cases, list) or not all(isinstance(case, dict) for case in cases):
        return "cases must be a list of objects"
    if len(cases) > protocol.GRADE_MAX_CASES:
        return f"at most {protocol.GRADE_MAX_CASES} cases"
    return None


def _case_request(frame: dict, case: dict, build: str | None) -> dict:
    """One case as the RUN it would have been: the program from the GRADE, the input its own."""
    request = {name: frame.get(name) for name in SHARED_FIELDS}
    request.update(
        id=frame.get("id"),
        stdin=case.get("stdin") or "",
        args=case.get("args") or [],
        timeout_s=case.get("timeout_s", 10),
        build=build,
    )
    return request


def _fresh(agent: Any) -> bool:
    """Between two cases: the reset after a run (sweep, wipe, proof, next runner), unreported."""
    agent.reset()
    return bool(agent.ready)


def _ends_grading(result: dict) -> bool:
    """A failed compile (no case can run) or a cancel (the pool asked to stop) ends grading."""
    compiled = result.get("compile")
    failed_compile = isinstance(compiled, dict) and compiled.get("exit_code") != 0
    return failed_compile or bool(result.get("cancelled"))
