"""The event log: each resource's events in order, with ids, bounded in memory, for followers.

A resource ("job", later "submission") has one stream of events (`status`, `stdout`, `stderr`,
and a last one, e.g. `result`). Publishers are worker threads; followers are SSE handlers on the
event loop. `EventLog` is the small interface an implementation on Redis streams (issue 14: a
follower on another node) replaces; `InMemoryEventLog` serves one process.

Memory is bounded per stream: output events never carry more than the run's output limit per
kind (what the sandbox would keep anyway), unread output of one kind is merged into one event,
and a stream holds at most `output_limit // MIN_BYTES_PER_EVENT` output events per kind. A
finished stream stays for `retention_s` (for reconnects), and at most `max_finished` finished
streams are kept; a follower that comes later gets the ending from the database instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

OUTPUT_KINDS = frozenset({"stdout", "stderr"})
MIN_BYTES_PER_EVENT = 16
MIN_EVENTS_PER_KIND = 64
MERGE_MAX_BYTES = 16 * 1024


@dataclass(frozen=True)
class Event:
    id: int  # 1, 2, ... within its resource's stream
    kind: str
    data: Any  # JSON-serialisable: text for output, an object otherwise


@dataclass(frozen=True)
class Replay:
    events: list[Event]
    known: bool  # the log holds a stream for this resource
    finished: bool  # the stream's final event is among `events` or was before `after`


class EventLog(Protocol):
    def open(self, resource: str, resource_id: str, *, output_limit: int) -> None:
        """Start (or restart) the resource's stream; output beyond `output_limit` per kind is
        dropped."""
        ...

    def publish(self, resource: str, resource_id: str, kind: str, data: Any) -> None:
        """Append one event (thread-safe, never blocks for long); ignored for an unknown or
        finished stream."""
        ...

    def finish(self, resource: str, resource_id: str, kind: str, data: Any) -> None:
        """Append the final event; followers end after it."""
        ...

    def replay(self, resource: str, resource_id: str, after: int) -> Replay:
        """The events after id `after`, and whether more can come."""
        ...

    def drop(self, resource: str, resource_id: str) -> None:
        """Forget the stream now (its only follower is done with it)."""
        ...

    async def wait(self, resource: str, resource_id: str, after: int, timeout_s: float) -> None:
        """Return once an event after `after` exists, the stream is finished or appears, or
        `timeout_s` has passed."""
        ...


@dataclass
class _Stream:
    output_limit: int
    events: list[Event] = field(default_factory=list)
    output_bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTPUT_KINDS, 0))
    output_events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTPUT_KINDS, 0))
    read_up_to: int = 0  # the highest id a follower has been given: older events never change
    finished_at: float | None = None

    @property
    def next_id(self) -> int:
        return self.events[-1].id + 1 if self.events else 1


class InMemoryEventLog:
    """EventLog for one process; followers are woken through their own event loop."""

    def __init__(self, *, retention_s: float = 60.0, max_finished: int = 256) -> None:
        self.retention_s = retention_s
        self.max_finished = max_finished
        self._lock = threading.Lock()
        self._streams: OrderedDict[tuple[str, str], _Stream] = OrderedDict()
        self._waiters: dict[tuple[str, str], set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]]
        self._waiters = {}

    def open(self, resource: str, resource_id: str, *, output_limit: int) -> None:
        key = (resource, resource_id)
        with self._lock:
            self._expire_locked(time.monotonic())
            self._streams[key] = _Stream(output_limit=output_limit)
            self._streams.move_to_end(key)
        self._wake(key)

    def publish(self, resource: str, resource_id: str, kind: str, data: Any) -> None:
        self._append((resource, resource_id), kind, data, final=False)

    def finish(self, resource: str, resource_id: str, kind: str, data: Any) -> None:
        self._append((resource, resource_id), kind, data, final=True)

    def _append(self, key: tuple[str, str], kind: str, data: Any, *, final: bool) -> None:
        with self._lock:
            stream = self._streams.get(key)
            if stream is None or stream.finished_at is not None:
                return
            if kind in OUTPUT_KINDS:
                if not self._add_output_locked(stream, kind, str(data)):
                    return
            else:
                stream.events.append(Event(stream.next_id, kind, data))
            if final:
                stream.finished_at = time.monotonic()
        self._wake(key)

    def _add_output_locked(self, stream: _Stream, kind: str, text: str) -> bool:
        """Within the output limit; merged into the last event while nobody has read it."""
        data = text.encode("utf-8", "replace")
        room = stream.output_limit - stream.output_bytes[kind]
        if room <= 0 or not data:
            return False
        if len(data) > room:
            text = data[:room].decode("utf-8", "ignore")
        stream.output_bytes[kind] += min(len(data), room)
        last = stream.events[-1] if stream.events else None
        if (
            last is not None
            and last.kind == kind
            and last.id > stream.read_up_to
            and len(last.data) + len(text) <= MERGE_MAX_BYTES
        ):
            stream.events[-1] = Event(last.id, kind, last.data + text)
            return True
        most = max(MIN_EVENTS_PER_KIND, stream.output_limit // MIN_BYTES_PER_EVENT)
        if stream.output_events[kind] >= most:
            return False
        stream.output_events[kind] += 1
        stream.events.append(Event(stream.next_id, kind, text))
        return True

    def replay(self, resource: str, resource_id: str, after: int) -> Replay:
        with self._lock:
            stream = self._streams.get((resource, resource_id))
            if stream is None:
                return Replay([], known=False, finished=False)
            events = [event for event in stream.events if event.id > after]
            if events:
                stream.read_up_to = max(stream.read_up_to, events[-1].id)
            return Replay(events, known=True, finished=stream.finished_at is not None)

    def drop(self, resource: str, resource_id: str) -> None:
        with self._lock:
            self._streams.pop((resource, resource_id), None)

    async def wait(self, resource: str, resource_id: str, after: int, timeout_s: float) -> None:
        key = (resource, resource_id)
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            stream = self._streams.get(key)
            if stream is not None and (
                stream.finished_at is not None or (stream.events and stream.events[-1].id > after)
            ):
                return
            self._waiters.setdefault(key, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]

    def stats(self) -> dict[str, int]:
        with self._lock:
            finished = sum(1 for s in self._streams.values() if s.finished_at is not None)
            return {"streams": len(self._streams), "finished": finished}

    def _wake(self, key: tuple[str, str]) -> None:
        with self._lock:
            waiters = list(self._waiters.get(key, ()))
        for loop, event in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed: its follower left
                loop.call_soon_threadsafe(event.set)

    def _expire_locked(self, now: float) -> None:
        """Drop finished streams past their retention, and the oldest beyond `max_finished`."""
        finished = [(k, s) for k, s in self._streams.items() if s.finished_at is not None]
        excess = len(finished) - self.max_finished
        for number, (key, stream) in enumerate(finished):
            assert stream.finished_at is not None
            if number < excess or now - stream.finished_at > self.retention_s:
                del self._streams[key]
