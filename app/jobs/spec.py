"""What one run is: the request body, and the spec it becomes once checked against the limits.

Both the synchronous endpoint (`app/code`) and the job queue accept the same body and store the
same spec, so the checks live here, below both of them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from app.core.config import Settings
from app.core.errors import PayloadTooLargeError, ServiceUnavailableError, ValidationAppError
from app.jobs import policy
from app.jobs.extras import (
    SCHEMA_MAX_ARG_CHARS,
    SCHEMA_MAX_ARGS,
    SCHEMA_MAX_FILES,
    FileBody,
    check_args,
    check_files,
)
from app.sandbox.languages import LANGUAGES, get_language
from app.sandbox.types import RunFile
from app.webhooks.urls import MAX_URL_CHARS, Resolver, check_callback_url, resolve_host

if TYPE_CHECKING:
    from app.sandbox.manager import SandboxManager

SANDBOX_DISABLED = "code execution is disabled on this server (SANDBOX_ENABLED=false)"
# Hard ceilings for the schema; the configured limits (MAX_CODE_BYTES, RUN_MAX_TIMEOUT_S, ...)
# are checked by resolve_run, because they are known only once the settings are read.
SCHEMA_MAX_CODE_CHARS = 1024 * 1024
SCHEMA_MAX_TIMEOUT_S = 3600.0
LANGUAGE_PATTERN = r"^[a-z0-9][a-z0-9_+.-]*$"
# metadata: a flat object of short strings, keys fit for a query parameter (`metadata.KEY=`)
METADATA_MAX_KEYS = 16
MetadataKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
]
MetadataValue = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]


class RunBody(BaseModel):
    """One run: the code, its language, what it reads on stdin and how long it may take."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=SCHEMA_MAX_CODE_CHARS, examples=["print('hello')"])
    language: str = Field(default="python", min_length=1, max_length=32, pattern=LANGUAGE_PATTERN)
    stdin: str | None = Field(default=None, max_length=SCHEMA_MAX_CODE_CHARS)
    timeout: float | None = Field(
        default=None,
        ge=1,
        le=SCHEMA_MAX_TIMEOUT_S,
        description="seconds; defaults to RUN_DEFAULT_TIMEOUT_S, at most RUN_MAX_TIMEOUT_S",
    )
    args: list[Annotated[str, Field(max_length=SCHEMA_MAX_ARG_CHARS)]] = Field(
        default_factory=list,
        max_length=SCHEMA_MAX_ARGS,
        description="command-line arguments of the program; at most RUN_MAX_ARGS",
    )
    files: list[FileBody] = Field(
        default_factory=list,
        max_length=SCHEMA_MAX_FILES,
        description="extra files placed beside the program; at most RUN_MAX_FILES",
    )


class JobBody(RunBody):
    """A queued run, plus where to deliver it when it finishes and the caller's own labels."""

    callback_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_URL_CHARS,
        description="http(s) URL that receives the finished job, signed per Standard Webhooks;"
        " loopback, private, link-local and metadata addresses are refused unless"
        " WEBHOOK_ALLOWED_HOSTS permits them",
    )
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        default=None,
        max_length=METADATA_MAX_KEYS,
        description="up to 16 string values (keys: letters, digits, _ and -; values: up to 256"
        " characters), returned with the job and in its webhook",
        examples=[{"lesson_id": "7", "exercise": "fizzbuzz"}],
    )


@dataclass(frozen=True)
class JobOptions:
    """What a queued job has beyond its run: its checked callback URL and its metadata."""

    callback_url: str | None = None
    metadata: dict[str, str] | None = None

    def request_hash(self, spec: RunSpec) -> str:
        """The run's hash, extended by these options only when there are any, so the hash of a
        job without them is the one it always had (an Idempotency-Key replay still matches)."""
        if self.callback_url is None and not self.metadata:
            return spec.request_hash()
        canonical = json.dumps(
            [spec.request_hash(), self.callback_url, sorted((self.metadata or {}).items())],
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def resolve_job_options(
    settings: Settings, body: JobBody, *, resolver: Resolver = resolve_host
) -> JobOptions:
    """Check the callback URL against the webhook URL policy (it resolves the host name).

    Raises:
        CallbackRefusedError (422, field `callback_url`): see check_callback_url.
    """
    url = body.callback_url
    if url is not None:
        url = check_callback_url(url, settings, resolver=resolver)
    return JobOptions(callback_url=url, metadata=dict(body.metadata) if body.metadata else None)


@dataclass(frozen=True)
class RunSpec:
    """A run request checked against the configured limits, with every default filled in."""

    code: str
    language: str
    stdin: str | None
    timeout_s: float
    args: tuple[str, ...] = ()
    files: tuple[RunFile, ...] = ()

    def request_hash(self) -> str:
        files = [[f.name, hashlib.sha256(f.content).hexdigest()] for f in self.files]
        canonical = json.dumps(
            [self.code, self.language, self.stdin, self.timeout_s, list(self.args), files],
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


def _size_of(field: str, value: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValidationAppError(
            f"{field} is not valid UTF-8 text", details={"field": field}
        ) from None


def _check_size(field: str, value: str, limit: int) -> None:
    if _size_of(field, value) > limit:
        raise PayloadTooLargeError(
            f"{field} is larger than {limit} bytes", details={"field": field, "max_bytes": limit}
        )


def resolve_run(*, settings: Settings, manager: SandboxManager | None, body: RunBody) -> RunSpec:
    """Check a run against the limits, the installed languages and the optional policy.

    Raises:
        ServiceUnavailableError: the sandbox is disabled on this server.
        PayloadTooLargeError / ValidationAppError: code, stdin or timeout over the limits.
        UnsupportedLanguageError: with details.supported.
        CodePolicyViolationError: only when CODE_POLICY_ENABLED.
    """
    if manager is None:
        raise ServiceUnavailableError(SANDBOX_DISABLED)
    _check_size("code", body.code, settings.max_code_bytes)
    if body.stdin is not None:
        _check_size("stdin", body.stdin, settings.max_stdin_bytes)
    timeout = settings.run_default_timeout_s if body.timeout is None else body.timeout
    if timeout > settings.run_max_timeout_s:
        raise ValidationAppError(
            f"timeout may be at most {settings.run_max_timeout_s:g} seconds",
            details={"field": "timeout", "max": settings.run_max_timeout_s},
        )
    installed = set(manager.pools) or set(LANGUAGES)
    language = get_language(body.language, installed)
    args = check_args(settings, body.args)
    files = check_files(settings, body.files, language.file_name)
    policy.check_code(settings, code=body.code, language=body.language)
    return RunSpec(body.code, body.language, body.stdin, float(timeout), args, files)
