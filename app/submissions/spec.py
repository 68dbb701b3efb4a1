"""What a submission is: the request body, and the spec it becomes once checked against the limits.

The program part (code, language, files, the optional policy) is checked exactly as a run's, by
`app.jobs.spec.resolve_run`; this module adds the test cases, the comparison, the per-case limits,
the callback URL's syntax and the metadata. Every refusal names its field and nothing is stored.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from app.core.config import Settings
from app.core.errors import PayloadTooLargeError, ValidationAppError
from app.jobs.extras import SCHEMA_MAX_ARG_CHARS, SCHEMA_MAX_ARGS, FileBody, check_args
from app.jobs.spec import (
    LANGUAGE_PATTERN,
    SCHEMA_MAX_CODE_CHARS,
    SCHEMA_MAX_TIMEOUT_S,
    RunBody,
    RunSpec,
    resolve_run,
)
from app.sandbox.languages import get_language
from app.submissions.models import CompareMode
from app.webhooks.urls import check_callback_url

if TYPE_CHECKING:
    from app.sandbox.manager import SandboxManager

SCHEMA_MAX_TEST_CASES = 1024  # the schema's ceiling; SUBMISSION_MAX_TEST_CASES is the real one
SCHEMA_MAX_MEMORY_MB = 64 * 1024
MAX_TOLERANCE = 1e9
METADATA_MAX_ENTRIES = 16
METADATA_KEY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
METADATA_MAX_VALUE_CHARS = 256
CALLBACK_URL_MAX_CHARS = 2048
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class TestCaseBody(BaseModel):
    """One test case: the program's stdin (and args), and the output it must print."""

    model_config = ConfigDict(extra="forbid")

    stdin: str = Field(default="", max_length=SCHEMA_MAX_CODE_CHARS)
    expected_output: str = Field(max_length=SCHEMA_MAX_CODE_CHARS)
    args: list[Annotated[str, Field(max_length=SCHEMA_MAX_ARG_CHARS)]] = Field(
        default_factory=list, max_length=SCHEMA_MAX_ARGS
    )
    timeout: float | None = Field(
        default=None, ge=1, le=SCHEMA_MAX_TIMEOUT_S, description="seconds; this case's own limit"
    )


class SubmissionBody(BaseModel):
    """A program and the test cases that grade it."""

    model_config = ConfigDict(extra="forbid")

    language: str = Field(default="python", min_length=1, max_length=32, pattern=LANGUAGE_PATTERN)
    code: str = Field(min_length=1, max_length=SCHEMA_MAX_CODE_CHARS)
    files: list[FileBody] = Field(default_factory=list, max_length=20)
    compare: CompareMode = Field(
        default=CompareMode.TRIM,
        description="exact | trim (trailing spaces and newlines ignored) | tokens | float",
    )
    abs_tol: float = Field(default=1e-6, ge=0, le=MAX_TOLERANCE, description="compare=float")
    rel_tol: float = Field(default=1e-6, ge=0, le=1, description="compare=float")
    timeout: float | None = Field(
        default=None,
        ge=1,
        le=SCHEMA_MAX_TIMEOUT_S,
        description="seconds per case unless a case sets its own; at most RUN_MAX_TIMEOUT_S",
    )
    memory_mb: int | None = Field(
        default=None,
        ge=1,
        le=SCHEMA_MAX_MEMORY_MB,
        description="per case; at most (and by default) the language's sandbox memory",
    )
    test_cases: list[TestCaseBody] = Field(
        min_length=1,
        max_length=SCHEMA_MAX_TEST_CASES,
        description="1 to SUBMISSION_MAX_TEST_CASES cases, graded in this order",
    )
    callback_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=CALLBACK_URL_MAX_CHARS,
        description="http(s) URL the finished submission is delivered to, signed (see Webhooks)",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        description=f"up to {METADATA_MAX_ENTRIES} flat string values, e.g. "
        '{"lesson_id": "7"}; keys [A-Za-z0-9_-]{1,64}, values up to '
        f"{METADATA_MAX_VALUE_CHARS} characters; filter with metadata.<key>=<value>",
    )


@dataclass(frozen=True)
class CaseSpec:
    stdin: str
    expected_output: str
    args: tuple[str, ...]
    timeout_s: float


@dataclass(frozen=True)
class SubmissionSpec:
    """A submission checked against the configured limits, every default filled in."""

    run: RunSpec  # code, language, files (stdin, args and timeout are per case)
    compare: CompareMode
    abs_tol: float
    rel_tol: float
    memory_mb: int
    cases: tuple[CaseSpec, ...]
    callback_url: str | None
    metadata: tuple[tuple[str, str], ...]

    def request_hash(self) -> str:
        cases = [[c.stdin, c.expected_output, list(c.args), c.timeout_s] for c in self.cases]
        canonical = json.dumps(
            [
                self.run.request_hash(),
                self.compare.value,
                self.abs_tol,
                self.rel_tol,
                self.memory_mb,
                cases,
                self.callback_url,
                list(self.metadata),
            ],
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def _invalid(field: str, message: str) -> ValidationAppError:
    return ValidationAppError(message, details={"field": field})


def _utf8_size(field: str, text: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise _invalid(field, f"{field} is not valid UTF-8 text") from None


def _callback_url(settings: Settings, url: str | None) -> str | None:
    """Syntax first (a clear message), then the webhooks' URL policy, which resolves the host.

    Raises:
        CallbackRefusedError (422, field `callback_url`): see check_callback_url.
    """
    url = check_callback_url_syntax(url)
    return None if url is None else check_callback_url(url, settings)


def check_callback_url_syntax(url: str | None) -> str | None:
    """An absolute http(s) URL with a host; where it may point is the webhooks' check."""
    if url is None:
        return None
    _utf8_size("callback_url", url)
    if _CONTROL.search(url) or " " in url:
        raise _invalid("callback_url", "callback_url may not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _invalid("callback_url", "callback_url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("callback_url", "callback_url must be an absolute http or https URL")
    if port == 0:
        raise _invalid("callback_url", "callback_url has no usable port")
    return url


def check_metadata(metadata: dict[str, str]) -> tuple[tuple[str, str], ...]:
    if len(metadata) > METADATA_MAX_ENTRIES:
        raise _invalid("metadata", f"metadata may have at most {METADATA_MAX_ENTRIES} entries")
    for key, value in metadata.items():
        if not re.fullmatch(METADATA_KEY_PATTERN, key):
            raise _invalid(f"metadata.{key[:64]}", "a metadata key is 1-64 of [A-Za-z0-9_-]")
        if len(value) > METADATA_MAX_VALUE_CHARS or _CONTROL.search(value):
            raise _invalid(
                f"metadata.{key}",
                f"a metadata value is at most {METADATA_MAX_VALUE_CHARS} characters, "
                "no control characters",
            )
        _utf8_size(f"metadata.{key}", value)
    return tuple(sorted(metadata.items()))


def _check_cases(settings: Settings, body: SubmissionBody) -> tuple[CaseSpec, ...]:
    limit = settings.submission_max_test_cases
    if len(body.test_cases) > limit:
        raise _invalid("test_cases", f"at most {limit} test cases are allowed")
    default_timeout = body.timeout if body.timeout is not None else settings.run_default_timeout_s
    total = 0
    cases = []
    for index, case in enumerate(body.test_cases):
        field = f"test_cases[{index}]"
        expected_size = _utf8_size(f"{field}.expected_output", case.expected_output)
        if expected_size > settings.submission_max_expected_output_bytes:
            raise PayloadTooLargeError(
                f"{field}.expected_output is larger than "
                f"{settings.submission_max_expected_output_bytes} bytes",
                details={
                    "field": f"{field}.expected_output",
                    "max_bytes": settings.submission_max_expected_output_bytes,
                },
            )
        stdin_size = _utf8_size(f"{field}.stdin", case.stdin)
        if stdin_size > settings.max_stdin_bytes:
            raise PayloadTooLargeError(
                f"{field}.stdin is larger than {settings.max_stdin_bytes} bytes",
                details={"field": f"{field}.stdin", "max_bytes": settings.max_stdin_bytes},
            )
        total += expected_size + stdin_size
        if total > settings.submission_max_cases_bytes:
            raise PayloadTooLargeError(
                f"the test cases are larger than {settings.submission_max_cases_bytes} bytes "
                "together",
                details={"field": "test_cases", "max_bytes": settings.submission_max_cases_bytes},
            )
        timeout = case.timeout if case.timeout is not None else default_timeout
        if timeout > settings.run_max_timeout_s:
            raise _invalid(
                f"{field}.timeout" if case.timeout is not None else "timeout",
                f"timeout may be at most {settings.run_max_timeout_s:g} seconds",
            )
        args = _case_args(settings, field, case.args)
        cases.append(CaseSpec(case.stdin, case.expected_output, args, float(timeout)))
    return tuple(cases)


def _case_args(settings: Settings, field: str, args: list[str]) -> tuple[str, ...]:
    try:
        return check_args(settings, args)
    except ValidationAppError as exc:
        inner = exc.details.get("field", "args") if isinstance(exc.details, dict) else "args"
        raise _invalid(f"{field}.{inner}", exc.message) from None


def _memory_mb(settings: Settings, body: SubmissionBody) -> int:
    """The language's sandbox memory is both the default and the ceiling of a case's memory."""
    ceiling = settings.sandbox_memory_mb or get_language(body.language).memory_mb
    if body.memory_mb is None:
        return ceiling
    if body.memory_mb > ceiling:
        raise _invalid("memory_mb", f"memory_mb may be at most {ceiling} for {body.language}")
    return body.memory_mb


def resolve_submission(
    *, settings: Settings, manager: SandboxManager | None, body: SubmissionBody
) -> SubmissionSpec:
    """Check a submission against the limits; the program as a run, then the cases.

    Raises:
        the refusals of resolve_run (sandbox disabled, code size, language, files, policy);
        ValidationAppError / PayloadTooLargeError naming the field (test_cases[i].expected_output,
        metadata.<key>, callback_url, memory_mb, ...).
    """
    program = RunBody(code=body.code, language=body.language, files=body.files)
    run = resolve_run(settings=settings, manager=manager, body=program)
    return SubmissionSpec(
        run=run,
        compare=body.compare,
        abs_tol=body.abs_tol,
        rel_tol=body.rel_tol,
        memory_mb=_memory_mb(settings, body),
        cases=_check_cases(settings, body),
        callback_url=_callback_url(settings, body.callback_url),
        metadata=check_metadata(body.metadata),
    )
