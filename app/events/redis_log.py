"""The event log in Redis (issue 14): a follower on node A sees what a job or submission running on
node B publishes, with the same ids, bounds and replay rules as `InMemoryEventLog`.

Each stream is a Redis list (event id n is element n - 1, so ids stay the integers Last-Event-ID
carries) and a hash of its bookkeeping (output limit, bytes and events per output kind, the
highest id a follower has read, finished, a generation that changes when the stream restarts).
Appending is one Lua script, atomic on the server: the same output bounds as in memory, unread
output merged into the last event, then a notification on one channel per namespace.

Followers never touch Redis on the event loop: `wait` copies the stream's new events into a
local mirror in a worker thread (marking them read, so they never change afterwards) and
`replay` reads only the mirror. One listener thread per node hears the notifications and wakes
the followers of that stream.

When Redis does not answer, events fail open to the database: publishing is skipped (asking
again after `STORAGE_RETRY_AFTER_S`, so a run never pays the timeout per line), followers get
no new live events, and every follower still gets the ending from the database (the SSE handler
asks it at least every KEEPALIVE_S), whose result holds the whole output. Refusing to run work
because its live view is down would turn a display problem into an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis
import structlog

from app.core.redis import connect
from app.events.log import (
    MERGE_MAX_BYTES,
    MIN_BYTES_PER_EVENT,
    MIN_EVENTS_PER_KIND,
    OUTPUT_KINDS,
    Event,
    Replay,
)

log = structlog.get_logger(__name__)

STORAGE_RETRY_AFTER_S = 5.0
OPEN_TTL_S = 3600  # a stream whose node died unfinished is forgotten this long after its last event
LISTEN_POLL_S = 0.5

# KEYS: list, meta. ARGV: kind, payload, final, is_output, merge_max, min_events, min_bytes,
# open ttl, retention ttl, channel. Returns the event's id, or 0 when it was not kept.
_APPEND = """
if redis.call('HGET', KEYS[2], 'finished') ~= '0' then return 0 end
local kind, payload = ARGV[1], ARGV[2]
local id = 0
if ARGV[4] == '1' then
  local limit = tonumber(redis.call('HGET', KEYS[2], 'limit'))
  local room = limit - tonumber(redis.call('HGET', KEYS[2], 'b:' .. kind) or '0')
  if room <= 0 or #payload == 0 then return 0 end
  if #payload > room then payload = string.sub(payload, 1, room) end
  redis.call('HINCRBY', KEYS[2], 'b:' .. kind, #payload)
  local count = redis.call('LLEN', KEYS[1])
  if count > tonumber(redis.call('HGET', KEYS[2], 'read')) then
    local last = redis.call('LINDEX', KEYS[1], -1)
    local cut = string.find(last, '\\n', 1, true)
    if string.sub(last, 1, cut - 1) == kind and #last - cut + #payload <= tonumber(ARGV[5]) then
      redis.call('LSET', KEYS[1], -1, last .. payload)
      id = count
    end
  end
  if id == 0 then
    local most = math.max(tonumber(ARGV[6]), math.floor(limit / tonumber(ARGV[7])))
    if tonumber(redis.call('HGET', KEYS[2], 'n:' .. kind) or '0') >= most then return 0 end
    redis.call('HINCRBY', KEYS[2], 'n:' .. kind, 1)
  end
end
if id == 0 then id = redis.call('RPUSH', KEYS[1], kind .. '\\n' .. payload) end
local ttl = ARGV[8]
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[2], 'finished', '1')
  ttl = ARGV[9]
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[10], KEYS[1])
return id
"""

# KEYS: list, meta. ARGV: the index to read from. Returns nil for an unknown stream, else
# {generation, finished, events from the index}; what it returns is marked read.
_READ = """
local meta = redis.call('HMGET', KEYS[2], 'gen', 'finished', 'read')
if not meta[1] then return nil end
local events = redis.call('LRANGE', KEYS[1], ARGV[1], -1)
local count = redis.call('LLEN', KEYS[1])
if #events > 0 and count > tonumber(meta[3]) then
  redis.call('HSET', KEYS[2], 'read', count)
end
return {meta[1], meta[2], events}
"""


@dataclass
class _Mirror:
    """This node's copy of one stream, for its followers."""

    generation: str
    events: list[Event] = field(default_factory=list)
    finished: bool = False
    used_at: float = field(default_factory=time.monotonic)


Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Event]


class RedisEventLog:
    """EventLog shared by every node that uses the same Redis and `namespace`."""

    def __init__(self, url: str, *, namespace: str = "warmbox", retention_s: float = 60.0) -> None:
        self.retention_s = retention_s
        self._client = connect(url)
        self._prefix = f"{namespace}:events:"
        self._channel = f"{namespace}:events"
        self._append = self._client.register_script(_APPEND)
        self._read = self._client.register_script(_READ)
        self._lock = threading.Lock()
        self._mirrors: dict[str, _Mirror] = {}
        self._waiters: dict[str, set[Waiter]] = {}
        self._down_until = 0.0
        self._stopping = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="events-redis", daemon=True)
        self._listener.start()

    # ------------------------------------------------------------------ publishers (threads)

    def open(self, resource: str, resource_id: str, *, output_limit: int) -> None:
        key = self._key(resource, resource_id)
        if not self._usable():
            return
        meta = {"gen": uuid.uuid4().hex, "limit": output_limit, "read": 0, "finished": "0"}
        try:
            with self._client.pipeline() as pipe:  # MULTI/EXEC: followers never see half of it
                pipe.delete(key, key + ":meta")
                pipe.hset(key + ":meta", mapping=meta)
                pipe.expire(key + ":meta", OPEN_TTL_S)
                pipe.publish(self._channel, key)
                pipe.execute()
        except redis.RedisError as exc:
            self._went_down(exc)

    def publish(self, resource: str, resource_id: str, kind: str, data: Any) -> None:
        self._add(self._key(resource, resource_id), kind, data, final=False)

    def finish(self, resource: str, resource_id: str, kind: str, data: Any) -> None:
        self._add(self._key(resource, resource_id), kind, data, final=True)

    def _add(self, key: str, kind: str, data: Any, *, final: bool) -> None:
        if not self._usable():
            return
        output = kind in OUTPUT_KINDS
        payload = str(data) if output else json.dumps(data, separators=(",", ":"))
        args = [kind, payload, int(final), int(output), MERGE_MAX_BYTES, MIN_EVENTS_PER_KIND]
        args += [MIN_BYTES_PER_EVENT, OPEN_TTL_S, max(1, round(self.retention_s)), self._channel]
        try:
            self._append(keys=[key, key + ":meta"], args=args)
        except redis.RedisError as exc:
            self._went_down(exc)

    # ------------------------------------------------------------------ followers (event loop)

    def replay(self, resource: str, resource_id: str, after: int) -> Replay:
        with self._lock:
            mirror = self._mirrors.get(self._key(resource, resource_id))
            if mirror is None:
                return Replay([], known=False, finished=False)
            mirror.used_at = time.monotonic()
            events = mirror.events[after:] if after >= 0 else list(mirror.events)
            return Replay(events, known=True, finished=mirror.finished)

    def drop(self, resource: str, resource_id: str) -> None:
        """Forget this node's copy; the stream itself expires in Redis (others may follow it)."""
        with self._lock:
            self._mirrors.pop(self._key(resource, resource_id), None)

    async def wait(self, resource: str, resource_id: str, after: int, timeout_s: float) -> None:
        key = self._key(resource, resource_id)
        waiter: Waiter = (asyncio.get_running_loop(), asyncio.Event())
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
            known = key in self._mirrors  # a stream that appears is news too
        try:
            while True:
                waiter[1].clear()  # a notice during the read below wakes the next wait at once
                await anyio.to_thread.run_sync(self._fetch, key)
                remaining = deadline - time.monotonic()
                if self._has_news(key, after, known) or remaining <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter[1].wait(), remaining)
                if time.monotonic() >= deadline:
                    return
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]

    def _has_news(self, key: str, after: int, known: bool) -> bool:
        with self._lock:
            mirror = self._mirrors.get(key)
            if mirror is None:
                return False
            return not known or mirror.finished or len(mirror.events) > after

    def _fetch(self, key: str) -> None:
        """Copy the stream's new events into the mirror (blocking: a worker thread)."""
        if self._usable() and not self._fetch_from_mirror_end(key):
            self._fetch_from_mirror_end(key)  # the stream restarted: read it from its start

    def _fetch_from_mirror_end(self, key: str) -> bool:
        """False when the stream restarted since the mirror was made (the mirror is dropped)."""
        with self._lock:
            mirror = self._mirrors.get(key)
            start = len(mirror.events) if mirror is not None else 0
        try:
            answer = self._read(keys=[key, key + ":meta"], args=[start])
        except redis.RedisError as exc:
            self._went_down(exc)
            return True
        with self._lock:
            self._forget_idle_locked()
            if answer is None:
                self._mirrors.pop(key, None)  # expired, or never opened
                return True
            generation, finished, raw = _text(answer[0]), _text(answer[1]), answer[2]
            mirror = self._mirrors.get(key)
            if mirror is not None and mirror.generation != generation:
                del self._mirrors[key]
                return False
            if mirror is None:
                if start:  # dropped meanwhile by drop(): read again from the start
                    return False
                mirror = self._mirrors[key] = _Mirror(generation)
            held, read_up_to = len(mirror.events), start + len(raw)
            if held < start:  # made again by another thread meanwhile: read from its end
                return False
            # Another follower's thread may have read part of this meanwhile: keep what is new.
            mirror.events += [_event(n + 1, raw[n - start]) for n in range(held, read_up_to)]
            if read_up_to >= held:
                mirror.finished = finished == "1"
            return True

    def _forget_idle_locked(self) -> None:
        """Drop copies nobody has read for a while (their followers have gone)."""
        idle_after = max(self.retention_s, 60.0)
        now = time.monotonic()
        for key in [k for k, m in self._mirrors.items() if now - m.used_at > idle_after]:
            if key not in self._waiters:
                del self._mirrors[key]

    # ------------------------------------------------------------------ the listener thread

    def close(self) -> None:
        self._stopping.set()
        self._listener.join(timeout=2)
        self._client.close()

    def _listen(self) -> None:
        """Wake the followers of each stream that changed; after an outage, wake them all so
        they read what they missed."""
        while not self._stopping.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._channel)
                self._wake_all()
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=LISTEN_POLL_S)
                    if message is not None:
                        self._wake(_text(message["data"]))
            except (redis.RedisError, OSError):
                self._stopping.wait(1.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def _wake(self, key: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(key, ()))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: its follower left
                loop.call_soon_threadsafe(event.set)

    def _wake_all(self) -> None:
        with self._lock:
            keys = list(self._waiters)
        for key in keys:
            self._wake(key)

    # ------------------------------------------------------------------ helpers

    def _usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _went_down(self, exc: Exception) -> None:
        self._down_until = time.monotonic() + STORAGE_RETRY_AFTER_S
        log.warning("event log: Redis unreachable, live events paused", error=str(exc))

    def _key(self, resource: str, resource_id: str) -> str:
        return f"{self._prefix}{resource}:{resource_id}"


def _event(event_id: int, item: bytes) -> Event:
    kind, _, payload = item.partition(b"\n")
    text = payload.decode("utf-8", "ignore")  # a cut at the output limit may split a character
    name = kind.decode()
    return Event(event_id, name, text if name in OUTPUT_KINDS else json.loads(text))


def _text(data: Any) -> str:
    return data.decode() if isinstance(data, bytes) else str(data)
