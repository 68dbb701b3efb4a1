"""How a program's output is compared with a test case's expected output.

- `exact`: byte for byte.
- `trim` (the default): trailing spaces and tabs at the end of each line, and trailing newlines,
  are ignored (what a student's editor or `print` adds is not a wrong answer).
- `tokens`: the whitespace-separated tokens must be equal.
- `float`: token by token; two tokens that both read as numbers are equal when within `abs_tol`
  or `rel_tol` of each other (`math.isclose`), other tokens must be equal as text.
"""

from __future__ import annotations

import math

from app.submissions.models import CompareMode

_TRAILING = " \t\r"


def _trimmed(text: str) -> str:
    return "\n".join(line.rstrip(_TRAILING) for line in text.split("\n")).rstrip("\n")


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _tokens_close(expected: str, actual: str, *, abs_tol: float, rel_tol: float) -> bool:
    if expected == actual:
        return True
    want, got = _number(expected), _number(actual)
    if want is None or got is None:
        return False
    if math.isnan(want) or math.isnan(got):
        return math.isnan(want) and math.isnan(got)
    return math.isclose(want, got, rel_tol=rel_tol, abs_tol=abs_tol)


def outputs_match(
    mode: CompareMode, expected: str, actual: str, *, abs_tol: float = 0.0, rel_tol: float = 0.0
) -> bool:
    """Whether `actual` passes as `expected` under `mode`."""
    if mode is CompareMode.EXACT:
        return expected == actual
    if mode is CompareMode.TRIM:
        return _trimmed(expected) == _trimmed(actual)
    want, got = expected.split(), actual.split()
    if len(want) != len(got):
        return False
    if mode is CompareMode.TOKENS:
        return want == got
    return all(
        _tokens_close(w, g, abs_tol=abs_tol, rel_tol=rel_tol)
        for w, g in zip(want, got, strict=True)
    )
