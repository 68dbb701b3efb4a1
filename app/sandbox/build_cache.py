"""The build cache: a compiled language's build, kept so that a repeat run skips the compile.

An entry is addressed by what decides the build's bytes: the image id (a rebuilt image or a new
compiler makes a new key), the language, the source, the extra files, the build arguments and
the compile flags, and by default the user, so one user's build is never handed to another (a
shared cache would let a user learn, by timing, that someone else compiled a given source; turn
it on with BUILD_CACHE_SHARED only where users trust each other). The cache is bounded in bytes
and drops whole entries, least recently used first. It lives in memory: a restart starts cold,
and several nodes each keep their own.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from app.sandbox.types import RunFile

SHARED = "*"  # the owner of every entry when the cache is shared between users


def build_key(
    *,
    image_id: str,
    language: str,
    source: str,
    files: Iterable[RunFile] = (),
    build_args: Sequence[str] = (),
    flags: Sequence[str] = (),
    owner: str = SHARED,
) -> str:
    """A digest of everything a build depends on; fields are length-prefixed so that no two
    different inputs can run together into the same bytes."""
    digest = hashlib.sha256()

    def feed(part: bytes) -> None:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)

    for text in (owner, image_id, language, source):
        feed(text.encode())
    for group in (build_args, flags):
        feed(str(len(group)).encode())
        for item in group:
            feed(item.encode())
    ordered = sorted(files, key=lambda f: f.name)
    feed(str(len(ordered)).encode())
    for extra in ordered:
        feed(extra.name.encode())
        feed(extra.content)
    return digest.hexdigest()


class BuildCache:
    """Thread-safe, byte-bounded LRU of build archives."""

    def __init__(self, max_bytes: int, shared: bool = False) -> None:
        self.max_bytes = max_bytes
        self.shared = shared
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def owner(self, user_id: str | None) -> str:
        """Whose entry a run reads and writes: its user's, or everyone's when shared."""
        if self.shared or user_id is None:
            return SHARED
        return f"user:{user_id}"

    def get(self, key: str) -> bytes | None:
        with self._lock:
            build = self._entries.get(key)
            if build is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return build

    def put(self, key: str, build: bytes) -> bool:
        """Keep `build`, dropping the least recently used entries to make room; False (and
        nothing dropped) when it alone is larger than the whole cache."""
        if len(build) > self.max_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            while self._entries and self._bytes + len(build) > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped)
                self.evictions += 1
            self._entries[key] = build
            self._bytes += len(build)
            return True

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "shared": self.shared,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }
