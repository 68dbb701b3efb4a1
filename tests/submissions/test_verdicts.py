"""Every verdict, from real runs on the real engine, through the API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.submissions.helpers import graded, hello_body

pytestmark = pytest.mark.docker

C_ECHO = (
    "#include <stdio.h>\n"
    'int main(void) { int a, b; if (scanf("%d %d", &a, &b) != 2) return 2;'
    ' printf("%d\\n", a + b); return 0; }\n'
)


def verdicts(submission: dict[str, object]) -> list[object]:
    return [case["verdict"] for case in submission["test_results"]]  # type: ignore[attr-defined, index]


def test_all_cases_pass_and_report_time_memory_and_output(
    client: TestClient, user: dict[str, str]
) -> None:
    body = hello_body(
        code="print(int(input()) * 2)",
        test_cases=[{"stdin": f"{n}\n", "expected_output": f"{n * 2}\n"} for n in range(3)],
    )

    submission = graded(client, user, body)

    assert submission["status"] == "finished"
    assert submission["verdict"] == "accepted"
    assert (submission["passed"], submission["total"]) == (3, 3)
    assert submission["compile"] is None
    for number, case in enumerate(submission["test_results"]):
        assert case["number"] == number
        assert case["verdict"] == "accepted"
        assert case["exit_code"] == 0
        assert case["stdout"] == f"{number * 2}\n"
        assert case["time_ms"] > 0
        assert case["memory_kb"] > 0
        assert case["truncated"] is False


def test_the_first_failing_case_gives_the_verdict_and_every_case_is_still_judged(
    client: TestClient, user: dict[str, str]
) -> None:
    code = "n = int(input())\nif n == 2: raise SystemExit(3)\nprint(n + (n == 1))"
    body = hello_body(
        code=code,
        test_cases=[{"stdin": f"{n}\n", "expected_output": f"{n}\n"} for n in range(3)],
    )

    submission = graded(client, user, body)

    assert verdicts(submission) == ["accepted", "wrong_answer", "runtime_error"]
    assert submission["verdict"] == "wrong_answer"
    assert submission["passed"] == 1


def test_time_limit_exceeded(client: TestClient, user: dict[str, str]) -> None:
    body = hello_body(code="while True: pass", timeout=1)

    submission = graded(client, user, body)

    assert submission["verdict"] == "time_limit_exceeded"


def test_memory_limit_exceeded_at_the_case_limit(client: TestClient, user: dict[str, str]) -> None:
    # 150 MB of bytes fits the sandbox but not the 64 MB this submission allows per case
    body = hello_body(code="x = bytearray(150 * 1024 * 1024); print(input())", memory_mb=64)

    submission = graded(client, user, body)

    assert submission["verdict"] == "memory_limit_exceeded"
    assert submission["test_results"][0]["memory_kb"] > 64 * 1024


def test_the_case_limit_holds_when_the_program_resets_its_peak(
    client: TestClient, user: dict[str, str]
) -> None:
    # Freed before the end, then /proc/self/clear_refs would reset the peak the case is judged by:
    # the sandbox refuses that write (sandbox_images/agent/cleanup.py, forbid_proc_writes).
    code = (
        "x = bytearray(150 * 1024 * 1024)\ndel x\n"
        "try:\n    open('/proc/self/clear_refs', 'w').write('5')\nexcept OSError:\n    pass\n"
        "print(input())"
    )
    body = hello_body(code=code, memory_mb=64)

    submission = graded(client, user, body)

    assert submission["verdict"] == "memory_limit_exceeded"
    assert submission["test_results"][0]["memory_kb"] > 64 * 1024


def test_memory_limit_exceeded_at_the_sandbox_limit(
    client: TestClient, user: dict[str, str]
) -> None:
    body = hello_body(code="x = []\nwhile True: x.append(bytearray(16 * 1024 * 1024))")

    submission = graded(client, user, body)

    assert submission["verdict"] == "memory_limit_exceeded"


def test_output_limit_exceeded(client: TestClient, user: dict[str, str]) -> None:
    body = hello_body(code="import sys\nwhile True: sys.stdout.write('x' * 65536)", timeout=5)

    submission = graded(client, user, body)

    assert submission["verdict"] == "output_limit_exceeded"
    assert submission["test_results"][0]["truncated"] is True


@pytest.mark.parametrize(
    ("compare", "expected", "actual", "verdict"),
    [
        ("exact", "1 2\n", "1 2\n", "accepted"),
        ("exact", "1 2", "1 2\n", "wrong_answer"),
        ("trim", "1 2", "1 2   \n\n", "accepted"),
        ("trim", "1 2", " 1 2\n", "wrong_answer"),
        ("tokens", "1 2\n3", "1\n2   3\n", "accepted"),
        ("tokens", "1 2 3", "1 2\n", "wrong_answer"),
    ],
)
def test_compare_modes(
    client: TestClient, user: dict[str, str], compare: str, expected: str, actual: str, verdict: str
) -> None:
    body = hello_body(
        code=f"import sys; sys.stdout.write({actual!r})",
        compare=compare,
        test_cases=[{"expected_output": expected}],
    )

    assert graded(client, user, body)["verdict"] == verdict


def test_float_compare_within_and_beyond_the_tolerances(
    client: TestClient, user: dict[str, str]
) -> None:
    body = hello_body(
        code="print(1/3, 'x', 1e6 + 0.5)",
        compare="float",
        abs_tol=1e-4,
        rel_tol=1e-6,
        test_cases=[
            {"expected_output": "0.3333 x 1000000.5"},  # abs 3e-5 <= 1e-4
            {"expected_output": "0.333 x 1000000.5"},  # abs 3e-4 > 1e-4, rel too
            {"expected_output": "0.33333 y 1000000.5"},  # a word differs
            {"expected_output": "0.33333 x 1000001"},  # rel 5e-7 <= 1e-6
        ],
    )

    submission = graded(client, user, body)

    assert verdicts(submission) == ["accepted", "wrong_answer", "wrong_answer", "accepted"]


def test_c_compile_error_ends_the_submission_without_running_a_case(
    client: TestClient, user: dict[str, str]
) -> None:
    body = hello_body(
        language="c",
        code="int main(void) { return undefined_name; }\n",
        test_cases=[{"stdin": "1 2", "expected_output": "3"}] * 3,
    )

    submission = graded(client, user, body)

    assert submission["status"] == "finished"
    assert submission["verdict"] == "compilation_error"
    assert submission["passed"] == 0
    assert submission["compile"]["exit_code"] != 0
    assert "undefined_name" in submission["compile"]["output"]
    assert verdicts(submission) == [None, None, None]  # no case ran


def test_c_compiles_once_and_grades_every_case(client: TestClient, user: dict[str, str]) -> None:
    body = hello_body(
        language="c",
        code=C_ECHO,
        test_cases=[
            {"stdin": "1 2", "expected_output": "3"},
            {"stdin": "5 5", "expected_output": "10"},
            {"stdin": "x", "expected_output": ""},
            {"stdin": "2 2", "expected_output": "5"},
        ],
    )

    submission = graded(client, user, body)

    assert submission["compile"]["exit_code"] == 0
    assert verdicts(submission) == ["accepted", "accepted", "runtime_error", "wrong_answer"]
    assert submission["verdict"] == "runtime_error"
