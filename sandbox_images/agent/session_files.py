"""A session's file operations on its scratch: put, get, delete and list, confined to it.

Every path is checked by workspace.check_name (relative, no `..`, `.`, empty parts or control
characters), then walked one component at a time with O_NOFOLLOW relative to the parent's
descriptor: a symlink a cell planted, even one swapped in while the operation runs, is never
followed, so nothing outside the scratch is read, written or removed. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import stat

from workspace import check_name


class SessionError(Exception):
    """A session file operation refused; its message goes back to the pool as is."""


def _open_parent(root: str, parts: list[str], create: bool) -> int:
    """A descriptor of the directory holding the last part, reached without following links."""
    directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=directory)
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            inner = os.open(part, flags, dir_fd=directory)
            os.close(directory)
            directory = inner
    except OSError as exc:
        os.close(directory)
        raise SessionError(f"path {'/'.join(parts)!r}: {_why(exc)}") from exc
    return directory


def _why(exc: OSError) -> str:
    if exc.errno in (40, 20):  # ELOOP, ENOTDIR: a link or a file where a directory should be
        return "not a plain path inside the session (a link or a file in the way)"
    return exc.strerror or str(exc)


def write_file(root: str, path: str, data: bytes) -> None:
    parts = check_name(path)
    directory = _open_parent(root, parts, create=True)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(parts[-1], flags, 0o644, dir_fd=directory)
        with os.fdopen(fd, "wb") as target:
            if not stat.S_ISREG(os.fstat(target.fileno()).st_mode):
                raise SessionError(f"{path!r} is not a regular file")
            target.write(data)
    except OSError as exc:
        raise SessionError(f"{path!r} could not be written: {_why(exc)}") from exc
    finally:
        os.close(directory)


def read_file(root: str, path: object, limit: int) -> bytes:
    parts = check_name(path)
    directory = _open_parent(root, parts, create=False)
    try:
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=directory)  # fmt: skip
        with os.fdopen(fd, "rb") as source:
            info = os.fstat(source.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise SessionError(f"{path!r} is not a regular file")
            if info.st_size > limit:
                raise SessionError(f"{path!r} is over {limit} bytes")
            data = source.read(limit + 1)
    except FileNotFoundError as exc:
        raise SessionError(f"no file {path!r}") from exc
    except OSError as exc:
        raise SessionError(f"{path!r} could not be read: {_why(exc)}") from exc
    finally:
        os.close(directory)
    if len(data) > limit:
        raise SessionError(f"{path!r} is over {limit} bytes")
    return data


def delete_file(root: str, path: object) -> None:
    parts = check_name(path)
    directory = _open_parent(root, parts, create=False)
    try:
        info = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            raise SessionError(f"{path!r} is a directory")
        os.unlink(parts[-1], dir_fd=directory)  # a link is removed itself, never its target
    except FileNotFoundError as exc:
        raise SessionError(f"no file {path!r}") from exc
    except OSError as exc:
        raise SessionError(f"{path!r} could not be removed: {_why(exc)}") from exc
    finally:
        os.close(directory)


def file_exists(root: str, path: str) -> bool:
    parts = check_name(path)
    try:
        directory = _open_parent(root, parts, create=False)
    except SessionError:
        return False
    try:
        os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
        return True
    except OSError:
        return False
    finally:
        os.close(directory)


def list_files(root: str, limit: int) -> list[dict]:
    """Regular files under the scratch (links are not followed), at most `limit`."""
    files: list[dict] = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(folder, name)
            try:
                info = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                files.append({"path": os.path.relpath(full, root), "size": info.st_size})
                if len(files) >= limit:
                    return files
    return files
