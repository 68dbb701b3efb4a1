"""The optional AST policy: a teaching aid that refuses with the offending line, off by default."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.config import Settings
from app.core.errors import CodePolicyViolationError
from app.jobs.policy import check_code
from tests.jobs.helpers import app_settings, headers_for, running_app


def policy(**overrides: object) -> Settings:
    return Settings(_env_file=None, environment="test", code_policy_enabled=True, **overrides)  # type: ignore[call-arg, arg-type]


@pytest.mark.parametrize(
    ("code", "rule", "line"),
    [
        ("x = 1\nimport socket\n", "forbidden_import", 2),
        ("from subprocess import run", "forbidden_import", 1),
        ("import os.path, ctypes.util", "forbidden_import", 1),
        ("print(1)\n\neval('1')", "forbidden_call", 3),
        ("import builtins\nbuiltins.exec('1')", "forbidden_call", 2),
    ],
)
def test_refuses_forbidden_imports_and_calls_with_the_line(code: str, rule: str, line: int) -> None:
    with pytest.raises(CodePolicyViolationError) as caught:
        check_code(policy(), code=code, language="python")

    assert caught.value.details == {"rule": rule, "line": line}


def test_refuses_deep_nesting() -> None:
    code = "if 1:\n if 1:\n  if 1:\n   pass\n"

    with pytest.raises(CodePolicyViolationError) as caught:
        check_code(policy(code_policy_max_depth=2), code=code, language="python")

    assert caught.value.details["rule"] == "max_depth"


def test_pathological_nesting_is_refused_not_a_crash() -> None:
    code = "x = " + "-" * 100_000 + "1"

    with pytest.raises(CodePolicyViolationError):
        check_code(policy(), code=code, language="python")


def test_allows_ordinary_code_and_leaves_syntax_errors_to_the_run() -> None:
    check_code(policy(), code="import math\nprint(math.pi)", language="python")
    check_code(policy(), code="def broken(:", language="python")


def test_is_off_by_default() -> None:
    settings = Settings(_env_file=None, environment="test")  # type: ignore[call-arg]

    check_code(settings, code="import socket", language="python")


@pytest.mark.docker
def test_the_endpoint_answers_400_code_policy_violation(tmp_path: Path) -> None:
    with running_app(app_settings(tmp_path, code_policy_enabled=True)) as client:
        headers = headers_for(client)
        refused = client.post(
            "/api/v1/code/execute", json={"code": "import socket"}, headers=headers
        )
        allowed = client.post("/api/v1/code/execute", json={"code": "print(1)"}, headers=headers)

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "CODE_POLICY_VIOLATION"
    assert refused.json()["error"]["details"]["line"] == 1
    assert allowed.status_code == 200
