"""Each case is a fresh process on a fresh scratch; a compiled program is compiled once; every
language the pool runs grades a hello world. Real engine, real database."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.sandbox.languages import LANGUAGES
from app.sandbox.types import RunResult
from app.submissions.grader import Case, Program, request_for
from app.submissions.models import CompareMode
from tests.sandbox.test_languages import ECHO
from tests.submissions.helpers import graded, hello_body

pytestmark = pytest.mark.docker

# Case "leave": writes beside the program and in /tmp, starts a detached process that would
# outlive the run, and keeps a variable in a module. Case "look": reports what it can see.
LEAVER = """
import os, subprocess, sys, builtins
mode = input().strip()
if mode == "leave":
    open("left.txt", "w").write("secret")
    open("/tmp/left.txt", "w").write("secret")
    subprocess.Popen(["sleep", "300"], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    builtins.LEFT = "secret"
    print("left")
else:
    sleepers = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                sleepers += b"sleep" in open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                pass
    seen = [os.path.exists("left.txt"), os.path.exists("/tmp/left.txt"),
            sleepers > 0, hasattr(__import__("builtins"), "LEFT")]
    print(*seen)
"""
C_SUM = (
    "#include <stdio.h>\n"
    'int main(void) { int a, b; scanf("%d %d", &a, &b); printf("%d\\n", a + b); return 0; }\n'
)


def test_no_state_of_one_case_is_visible_to_the_next(
    client: TestClient, user: dict[str, str]
) -> None:
    body = hello_body(
        code=LEAVER,
        test_cases=[
            {"stdin": "leave", "expected_output": "left"},
            {"stdin": "look", "expected_output": "False False False False"},
            {"stdin": "leave", "expected_output": "left"},
            {"stdin": "look", "expected_output": "False False False False"},
        ],
    )

    submission = graded(client, user, body)

    results = submission["test_results"]
    assert [case["verdict"] for case in results] == ["accepted"] * 4, results
    assert submission["verdict"] == "accepted"


def test_a_c_program_is_compiled_by_the_first_case_only(client: TestClient) -> None:
    """One lease grades every case: the first compiles and returns its build, and the agent
    reports every later case's compile as cached (it unpacked that build): one compile for the
    whole submission."""
    manager = client.app.state.sandbox  # type: ignore[attr-defined]
    manager.build_cache.max_bytes = 0  # prove the agent's own hand-over, not the cache's
    seen: list[RunResult] = []
    program = Program(
        submission_id="c-compile-once",
        user_id="tester",
        language="c",
        code=C_SUM,
        files=(),
        compare=CompareMode.TRIM,
        abs_tol=0.0,
        rel_tol=0.0,
        memory_mb=256,
        output_limit_bytes=65536,
        stored_output_bytes=4096,
    )
    cases = [Case(n, f"{n} {n}", f"{2 * n}", (), 10.0) for n in range(4)]
    try:
        graded = manager.grade(
            request_for(program, cases, None), "tester", lambda _i, result: seen.append(result)
        )
    finally:
        manager.build_cache.max_bytes = manager.settings.build_cache_max_mb * 1024 * 1024

    assert [result.stdout for result in graded.results] == [f"{2 * n}\n" for n in range(4)]
    assert seen == list(graded.results)
    assert graded.build
    first, *later = graded.results
    assert first.compile is not None
    assert first.compile.cached is False
    for result in later:
        assert result.compile is not None
        assert result.compile.cached is True


HELLO_CASE = {
    "stdin": "line one\nline two\n",
    "args": ["a1", "two words"],
    "expected_output": "hello a1 two words DATA line one",
}


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_language_grades_a_hello_world_accepted(
    client: TestClient, user: dict[str, str], language: str
) -> None:
    body = hello_body(
        language=language,
        code=ECHO[language],
        compare="tokens",
        files=[{"name": "data.txt", "content": "DATA"}],
        test_cases=[HELLO_CASE, HELLO_CASE],
    )

    submission = graded(client, user, body, timeout_s=180)

    assert submission["verdict"] == "accepted", submission
    assert submission["passed"] == 2
    assert (submission["compile"] is not None) == LANGUAGES[language].compiled
