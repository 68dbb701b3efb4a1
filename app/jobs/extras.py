"""A run's extra inputs, `args` and `files`: their schema, their checks, and how a job keeps them.

Files are placed beside the program inside the sandbox, so a name is a plain file name: no path
separators (hence no absolute paths and no `..` walks), no control characters, not `.` or `..`,
not the program's own file name, no duplicates. Count and total size are settings; the schema
holds only hard ceilings.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.config import Settings
from app.core.errors import PayloadTooLargeError, ValidationAppError
from app.sandbox.types import RunFile

SCHEMA_MAX_FILES = 20
SCHEMA_MAX_ARGS = 256
SCHEMA_MAX_ARG_CHARS = 64 * 1024
SCHEMA_MAX_FILE_CHARS = 16 * 1024 * 1024
MAX_FILE_NAME_BYTES = 255


class FileBody(BaseModel):
    """One extra file; `content` is text, or base64 for binary content."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=MAX_FILE_NAME_BYTES, examples=["data.csv"])
    content: str = Field(default="", max_length=SCHEMA_MAX_FILE_CHARS)
    encoding: Literal["utf8", "base64"] = "utf8"


def _invalid(field: str, message: str) -> ValidationAppError:
    return ValidationAppError(message, details={"field": field})


def check_args(settings: Settings, args: Sequence[str]) -> tuple[str, ...]:
    if len(args) > settings.run_max_args:
        raise _invalid("args", f"at most {settings.run_max_args} args are allowed")
    for index, arg in enumerate(args):
        field = f"args[{index}]"
        if "\x00" in arg:
            raise _invalid(field, "an argument may not contain NUL")
        try:
            size = len(arg.encode("utf-8"))
        except UnicodeEncodeError:
            raise _invalid(field, "an argument must be valid UTF-8 text") from None
        if size > settings.run_max_arg_bytes:
            raise _invalid(field, f"an argument may be at most {settings.run_max_arg_bytes} bytes")
    return tuple(args)


def check_name(field: str, name: str, program: str) -> None:
    """Refuse a name that is not one plain file beside the program."""
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        raise _invalid(field, "a file name may not contain control characters")
    if "/" in name or "\\" in name:
        raise _invalid(field, "a file name may not contain a path (no '/', no '\\\\')")
    if name in (".", "..") or not name.strip():
        raise _invalid(field, f"{name!r} is not a file name")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise _invalid(field, "a file name must be valid UTF-8 text") from None
    if size > MAX_FILE_NAME_BYTES:
        raise _invalid(field, f"a file name may be at most {MAX_FILE_NAME_BYTES} bytes")
    if name == program:
        raise _invalid(field, f"{name!r} is the program's own file name")


def _content(field: str, body: FileBody) -> bytes:
    if body.encoding == "base64":
        try:
            return base64.b64decode(body.content, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(field, "content is not valid base64") from None
    try:
        return body.content.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(field, "content is not valid UTF-8 text") from None


def check_files(settings: Settings, files: Sequence[FileBody], program: str) -> tuple[RunFile, ...]:
    """The files as the sandbox takes them, or a 4xx naming the first bad field."""
    if len(files) > settings.run_max_files:
        raise _invalid("files", f"at most {settings.run_max_files} files are allowed")
    seen: set[str] = set()
    total = 0
    checked = []
    for index, body in enumerate(files):
        check_name(f"files[{index}].name", body.name, program)
        if body.name in seen:
            raise _invalid(f"files[{index}].name", f"{body.name!r} is given twice")
        seen.add(body.name)
        content = _content(f"files[{index}].content", body)
        total += len(content)
        if total > settings.run_max_files_bytes:
            raise PayloadTooLargeError(
                f"files are larger than {settings.run_max_files_bytes} bytes together",
                details={"field": "files", "max_bytes": settings.run_max_files_bytes},
            )
        checked.append(RunFile(body.name, content))
    return tuple(checked)


# ---------------------------------------------------------------- storage in a job row


def dump_args(args: Sequence[str]) -> str | None:
    return json.dumps(list(args), ensure_ascii=False) if args else None


def load_args(stored: str | None) -> tuple[str, ...]:
    return tuple(json.loads(stored)) if stored else ()


def dump_files(files: Sequence[RunFile]) -> str | None:
    if not files:
        return None
    return json.dumps(
        [{"name": f.name, "content": base64.b64encode(f.content).decode()} for f in files],
        ensure_ascii=False,
    )


def load_files(stored: str | None) -> tuple[RunFile, ...]:
    if not stored:
        return ()
    return tuple(RunFile(f["name"], base64.b64decode(f["content"])) for f in json.loads(stored))
