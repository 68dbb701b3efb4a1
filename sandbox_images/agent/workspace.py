"""Placing a run's files in scratch and packing or unpacking its build: the agent's file work.

The host has already checked every name; this module refuses anything that is not a plain name or
a simple relative path inside the scratch all the same, and writes without following links, so a
name can never reach outside it. Standard library only.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import io
import os
import tarfile

MAX_NAME_BYTES = 255
MAX_DEPTH = 8


class WorkspaceError(ValueError):
    """A file name or build archive the agent will not use."""


def check_name(name: object) -> list[str]:
    """The path components of an acceptable relative name, or WorkspaceError."""
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME_BYTES * MAX_DEPTH:
        raise WorkspaceError(f"file name {name!r} refused")
    parts = name.split("/")
    bad = (
        name.startswith("/")
        or len(parts) > MAX_DEPTH
        or any(part in ("", ".", "..") or len(part.encode()) > MAX_NAME_BYTES for part in parts)
        or any(ord(char) < 0x20 or ord(char) == 0x7F for char in name)
    )
    if bad:
        raise WorkspaceError(f"file name {name!r} refused")
    return parts


def write_file(root: str, name: str, content: bytes, mode: int = 0o644) -> None:
    """Create `root/name` (and its directories) without following any link; never overwrite."""
    parts = check_name(name)
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=directory)
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=directory)
            os.close(directory)
            directory = inner
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(parts[-1], flags, mode, dir_fd=directory)
        with os.fdopen(fd, "wb") as target:
            target.write(content)
    except OSError as exc:
        raise WorkspaceError(f"file {name!r} could not be written: {exc.strerror}") from exc
    finally:
        os.close(directory)


def place_files(root: str, files: object) -> None:
    """Write the request's extra files ({name, content: base64}) beside the program."""
    if not isinstance(files, list):
        raise WorkspaceError("files must be a list")
    for item in files:
        if not isinstance(item, dict):
            raise WorkspaceError("each file must be an object")
        try:
            content = base64.b64decode(item.get("content") or "", validate=True)
        except ValueError as exc:
            raise WorkspaceError(f"file {item.get('name')!r} is not base64") from exc
        write_file(root, item.get("name"), content)


def pack_build(root: str, patterns: list[str], limit: int) -> bytes | None:
    """A tar of the files in `root` matching `patterns` (top level only), or None when there is
    nothing to pack or it would be over `limit` bytes (then the pool simply caches nothing)."""
    names = sorted(
        name
        for name in os.listdir(root)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
        and os.path.isfile(os.path.join(root, name))
        and not os.path.islink(os.path.join(root, name))
    )
    if not names or sum(os.path.getsize(os.path.join(root, n)) for n in names) > limit:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in names:
            info = archive.gettarinfo(os.path.join(root, name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(os.path.join(root, name), "rb") as source:
                archive.addfile(info, source)
    data = buffer.getvalue()
    return data if len(data) <= limit else None


def unpack_build(root: str, data: bytes) -> None:
    """Unpack a build made by pack_build: regular files with plain names only."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for member in archive.getmembers():
                if not member.isreg() or "/" in member.name:
                    raise WorkspaceError(f"build member {member.name!r} refused")
                check_name(member.name)
                source = archive.extractfile(member)
                content = source.read() if source else b""
                write_file(root, member.name, content, 0o755 if member.mode & 0o100 else 0o644)
    except tarfile.TarError as exc:
        raise WorkspaceError(f"build archive unreadable: {exc}") from exc
