"""Where each session lives and how many each user holds: this node's memory on a single node,
Redis when several nodes serve one database (issue 14). The service takes either.

A session's container can only be reached from the node that lent it, so every node must be able
to ask "who holds session S, and at which address?". The owner writes one entry per session
(`<ns>:sessions:owner:<id>` -> node id, NODE_URL, user id) with a time to live and rewrites it
every third of that time; a node that dies stops rewriting, and its entries vanish within
SESSION_DIRECTORY_TTL_S. The same renewal keeps a sorted set per user (session ids scored by the
epoch second their entry lapses), which is what SESSIONS_MAX_PER_USER counts across nodes: a
dead node's sessions stop counting when they stop being renewed.

Redis unreachable fails closed for sessions: creating one is refused (503) because its entry
could not be written (no other node could find it) nor its count checked, and a node that
cannot look a session up answers 503 rather than guess that it is gone. Nothing is lost: the
owner rewrites every entry, whole, at its next renewal once Redis answers again.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import redis
import redis.asyncio
import structlog

from app.core.config import Settings
from app.core.errors import ServiceUnavailableError
from app.core.redis import HEALTH_CHECK_INTERVAL_S, SOCKET_TIMEOUT_S

log = structlog.get_logger(__name__)

# KEYS[1] the user's set; ARGV: now, limit (0: never refuse), session id, lapses at, key ttl (s).
_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = tonumber(ARGV[2])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


@dataclass(frozen=True)
class SessionOwner:
    """The node that holds a session, and how the other nodes reach it."""

    node_id: str
    url: str
    user_id: str


class DirectoryUnavailableError(ServiceUnavailableError):
    default_message = "the session directory (Redis) is unreachable; try again shortly"


class SessionDirectory(Protocol):
    """What the service needs: count a user's sessions, say where a session lives."""

    node_id: str
    shared: bool  # other nodes read it: a node then ends only its own sessions at start-up
    renew_interval_s: float | None  # how often the owner renews its entries (None: never)

    async def reserve(self, user_id: str, session_id: str, *, limit: int) -> bool:
        """Count one more session of `user_id`; False when `limit` (0: none) are open."""
        ...

    async def publish(self, session_id: str, user_id: str) -> None: ...

    async def renew(self, sessions: Iterable[tuple[str, str]]) -> None: ...

    async def withdraw(self, session_id: str, user_id: str) -> None: ...

    async def lookup(self, session_id: str) -> SessionOwner | None: ...

    async def held(self, session_ids: list[str]) -> set[str]:
        """Which of `session_ids` some live node holds."""
        ...

    async def close(self) -> None: ...


class LocalSessionDirectory:
    """One node: every session is this node's, and the count is this process's memory. All
    calls happen on the event loop without an await inside, so a check and its add are atomic."""

    shared = False
    renew_interval_s = None

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._by_user: dict[str, set[str]] = {}

    async def reserve(self, user_id: str, session_id: str, *, limit: int) -> bool:
        held = self._by_user.setdefault(user_id, set())
        if limit and len(held) >= limit:
            return False
        held.add(session_id)
        return True

    async def publish(self, session_id: str, user_id: str) -> None:
        return None

    async def renew(self, sessions: Iterable[tuple[str, str]]) -> None:
        return None

    async def withdraw(self, session_id: str, user_id: str) -> None:
        held = self._by_user.get(user_id, set())
        held.discard(session_id)
        if not held:
            self._by_user.pop(user_id, None)

    async def lookup(self, session_id: str) -> SessionOwner | None:
        return None

    async def held(self, session_ids: list[str]) -> set[str]:
        return {sid for held in self._by_user.values() for sid in held if sid in session_ids}

    async def close(self) -> None:
        return None


class RedisSessionDirectory:
    """The session directory of every node that shares one Redis and `namespace`."""

    shared = True

    def __init__(
        self, url: str, *, node_id: str, node_url: str, ttl_s: float, namespace: str = "warmbox"
    ) -> None:
        self.node_id = node_id
        self.node_url = node_url.rstrip("/")
        self.ttl_s = ttl_s
        self._client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=HEALTH_CHECK_INTERVAL_S,
        )
        self._prefix = f"{namespace}:sessions:"
        self._reserve = self._client.register_script(_RESERVE)

    @property
    def renew_interval_s(self) -> float:
        """Three renewals per time to live: one lost round trip never drops a live session."""
        return self.ttl_s / 3

    async def reserve(self, user_id: str, session_id: str, *, limit: int) -> bool:
        """Count `session_id` against `user_id` on every node; False when `limit` are open.

        Raises:
            DirectoryUnavailableError: Redis did not answer.
        """
        now = time.time()
        lapses_at = now + self.ttl_s
        try:
            granted = await self._reserve(
                keys=[self._user_key(user_id)],
                args=[now, limit, session_id, lapses_at, math.ceil(self.ttl_s * 2)],
            )
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return bool(granted)

    async def publish(self, session_id: str, user_id: str) -> None:
        """Write (or rewrite) this node's entry for one session.

        Raises:
            DirectoryUnavailableError: Redis did not answer.
        """
        await self.renew([(session_id, user_id)])

    async def renew(self, sessions: Iterable[tuple[str, str]]) -> None:
        """Rewrite the entries and counts of this node's `(session_id, user_id)`s in one round
        trip: whole values, not just their expiry, so entries lost with Redis come back.

        Raises:
            DirectoryUnavailableError: Redis did not answer.
        """
        pairs = list(sessions)
        if not pairs:
            return
        lapses_at = time.time() + self.ttl_s
        pipe = self._client.pipeline(transaction=False)
        for session_id, user_id in pairs:
            value = json.dumps({"node": self.node_id, "url": self.node_url, "user": user_id})
            pipe.set(self._owner_key(session_id), value, px=math.ceil(self.ttl_s * 1000))
            pipe.zadd(self._user_key(user_id), {session_id: lapses_at})
            pipe.expire(self._user_key(user_id), math.ceil(self.ttl_s * 2))
        try:
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def withdraw(self, session_id: str, user_id: str) -> None:
        """Forget an ended session; a failure is only logged (the entry lapses on its own)."""
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(self._owner_key(session_id))
        pipe.zrem(self._user_key(user_id), session_id)
        try:
            await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("session directory: could not withdraw", error=str(exc))

    async def lookup(self, session_id: str) -> SessionOwner | None:
        """The live owner of `session_id`, or None when no live node holds it.

        Raises:
            DirectoryUnavailableError: Redis did not answer.
        """
        try:
            raw = await self._client.get(self._owner_key(session_id))
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        if raw is None:
            return None
        entry = json.loads(raw)
        return SessionOwner(node_id=entry["node"], url=entry["url"], user_id=entry["user"])

    async def held(self, session_ids: list[str]) -> set[str]:
        """Which of `session_ids` have an entry (one round trip).

        Raises:
            DirectoryUnavailableError: Redis did not answer.
        """
        if not session_ids:
            return set()
        try:
            values = await self._client.mget([self._owner_key(sid) for sid in session_ids])
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return {sid for sid, value in zip(session_ids, values, strict=True) if value is not None}

    async def close(self) -> None:
        await self._client.aclose()

    def _unavailable(self, exc: BaseException) -> DirectoryUnavailableError:
        log.warning("session directory: Redis unreachable", error=str(exc))
        return DirectoryUnavailableError()

    def _owner_key(self, session_id: str) -> str:
        return f"{self._prefix}owner:{session_id}"

    def _user_key(self, user_id: str) -> str:
        return f"{self._prefix}user:{user_id}"


def directory_for(settings: Settings) -> SessionDirectory:
    """Redis when several nodes share one (REDIS_URL), else this process's memory."""
    if not settings.clustered:
        return LocalSessionDirectory(settings.effective_node_id)
    if not settings.node_url:
        log.warning("NODE_URL is empty: other nodes cannot forward this node's sessions to it")
    return RedisSessionDirectory(
        settings.redis_url,
        node_id=settings.effective_node_id,
        node_url=settings.node_url,
        ttl_s=settings.session_directory_ttl_s,
    )
