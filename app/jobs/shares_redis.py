"""`RunShares` kept in Redis, so that every node counts a user's runs once (issue 14).

Each user has a sorted set of the tickets in progress, scored by the epoch second by which the run
will have ended (its timeout plus `TICKET_GRACE_S`). Acquiring is one Lua script, atomic on the
server: drop the tickets whose time is up (a node that dies never releases its tickets; they
lapse when its runs would have ended anyway), count, add. Releasing removes the ticket and
publishes the user id; every node's listener thread hears it and wakes its queue, so a job queued
on node B starts when the user's run on node A ends.

When Redis does not answer, shares fail open to this node's own memory count (an
`InMemoryRunShares` with the same limit) and ask Redis again after `STORAGE_RETRY_AFTER_S`: a
share protects fairness, not security, and refusing every run on every node while Redis restarts
would be an outage. The cost is bounded: a user may hold `limit` runs per node until Redis is back.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
import uuid
from typing import Any

import redis
import structlog

from app.jobs.shares import InMemoryRunShares, ReleaseListener, ShareTicket

log = structlog.get_logger(__name__)

TICKET_GRACE_S = 30.0
STORAGE_RETRY_AFTER_S = 5.0
SOCKET_TIMEOUT_S = 0.5

# KEYS[1] the user's set; ARGV: now, limit (0: never refuse), ticket, ends_at, key ttl (s).
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local limit = tonumber(ARGV[2])
if limit > 0 and redis.call('ZCARD', KEYS[1]) >= limit then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class RedisRunShares:
    """RunShares shared by every node that uses the same Redis and `namespace`."""

    remote = True

    def __init__(
        self,
        url: str,
        limit: int,
        *,
        namespace: str = "warmbox",
        ticket_grace_s: float = TICKET_GRACE_S,
    ) -> None:
        self.limit = limit
        self._grace_s = ticket_grace_s
        self._client = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
        )
        self._prefix = f"{namespace}:shares:"
        self._channel = f"{namespace}:shares:released"
        self._node = uuid.uuid4().hex[:12]  # ticket names never collide between nodes
        self._numbers = itertools.count(1)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._fallback = InMemoryRunShares(limit)
        self._fallback_tickets: set[ShareTicket] = set()
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._listeners: list[ReleaseListener] = []
        self._stopping = threading.Event()
        self._subscriber = threading.Thread(
            target=self._listen, name="shares-redis-listener", daemon=True
        )
        self._subscriber.start()

    # ------------------------------------------------------------------ RunShares

    def try_acquire(self, user_id: str, *, run_timeout_s: float) -> ShareTicket | None:
        ticket = ShareTicket(user_id, next(self._numbers), time.monotonic() + run_timeout_s)
        if self._redis_usable():
            now = time.time()
            ends_at = now + run_timeout_s + self._grace_s
            try:
                granted = self._acquire(
                    keys=[self._key(user_id)],
                    args=[now, self.limit, self._member(ticket), ends_at, math.ceil(ends_at - now)],
                )
            except redis.RedisError as exc:
                self._went_down(exc)
            else:
                return ticket if granted else None
        fallback = self._fallback.try_acquire(user_id, run_timeout_s=run_timeout_s)
        if fallback is not None:
            with self._lock:
                self._fallback_tickets.add(fallback)
        return fallback

    def release(self, ticket: ShareTicket) -> None:
        with self._lock:
            local = ticket in self._fallback_tickets
            self._fallback_tickets.discard(ticket)
        if local:
            self._fallback.release(ticket)
            self._notify(ticket.user_id)
            return
        try:
            removed = self._client.zrem(self._key(ticket.user_id), self._member(ticket))
            if removed:
                self._client.publish(self._channel, ticket.user_id)
        except redis.RedisError as exc:
            # The ticket lapses on its own when its run would have ended.
            self._went_down(exc)
        self._notify(ticket.user_id)  # this node's queue need not wait for the round trip

    def running(self, user_id: str) -> int:
        local = self._fallback.running(user_id)
        if not self._redis_usable():
            return local
        try:
            self._client.zremrangebyscore(self._key(user_id), "-inf", time.time())
            return int(self._client.zcard(self._key(user_id))) + local
        except redis.RedisError as exc:
            self._went_down(exc)
            return local

    def seconds_until_free(self, user_id: str) -> int:
        if self._redis_usable():
            try:
                first = self._client.zrange(self._key(user_id), 0, 0, withscores=True)
            except redis.RedisError as exc:
                self._went_down(exc)
            else:
                if first:
                    return max(1, math.ceil(first[0][1] - self._grace_s - time.time()))
        return self._fallback.seconds_until_free(user_id)

    def on_release(self, listener: ReleaseListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._stopping.set()
        self._subscriber.join(timeout=2)
        self._client.close()

    def _listen(self) -> None:
        """Hear every node's releases; reconnect after a Redis outage."""
        while not self._stopping.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None:
                        self._notify(_text(message["data"]))
            except (redis.RedisError, OSError):
                self._stopping.wait(STORAGE_RETRY_AFTER_S)
            finally:
                pubsub.close()

    # ------------------------------------------------------------------ helpers

    def _notify(self, user_id: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener(user_id)

    def _redis_usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _went_down(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + STORAGE_RETRY_AFTER_S
        log.warning("run shares: Redis unreachable, counting in memory", error=str(exc))

    def _key(self, user_id: str) -> str:
        return self._prefix + user_id

    def _member(self, ticket: ShareTicket) -> str:
        return f"{self._node}:{ticket.number}"


def _text(data: Any) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)
