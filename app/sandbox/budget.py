"""ContainerBudget: one count of containers shared by the pools of every language.

Each ContainerPool keeps its own containers (reset, health checks, reclaim); before it starts one
it reserves a unit here, and it gives the unit back once a container is gone. When the budget is
full, a run that finds nothing warm queues a ticket. The budget then makes room by asking another
language's pool to give up an idle container (least recently used language first), and a unit
that comes back always goes to the oldest ticket of any language, which is how containers follow
demand without a pool ever knowing about the others.

Locking: the budget's lock is a leaf. Pools call `try_reserve`, `enqueue` and `withdraw` while
holding their own lock; the budget calls back into pools (`granted`, `surrender_idle`) only
without its lock held, and `release` is never called with a pool lock held.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

log = structlog.get_logger(__name__)


class BudgetMember(Protocol):
    """What the budget needs of a pool."""

    @property
    def name(self) -> str: ...

    def idle_rank(self) -> tuple[int, float] | None:
        """None when it has nothing idle, else a sort key: smaller gives up a container first."""
        ...

    def surrender_idle(self) -> bool:
        """Destroy one idle container (its unit comes back through `release`); False if none."""
        ...

    def granted(self) -> None:
        """A unit was reserved for this pool's oldest waiter: start a container with it."""
        ...


_ticket_numbers = itertools.count()


@dataclass
class Ticket:
    """A run waiting for a container that the budget could not yet pay for."""

    language: str
    since: float = field(default_factory=time.monotonic)
    number: int = field(default_factory=lambda: next(_ticket_numbers))
    granted: bool = False


class ContainerBudget:
    """At most `max_total` containers (running or starting) across all registered pools."""

    def __init__(self, max_total: int) -> None:
        self.max_total = max_total
        self._lock = threading.Lock()
        self._used: Counter[str] = Counter()
        self._queue: deque[Ticket] = deque()
        self._members: dict[str, BudgetMember] = {}
        self._peak = 0
        self._closed = False
        self._room_maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budget")

    def register(self, member: BudgetMember) -> None:
        with self._lock:
            self._members[member.name] = member

    def unregister(self, member: BudgetMember) -> None:
        with self._lock:
            if self._members.get(member.name) is member:
                del self._members[member.name]

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._room_maker.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ units

    def try_reserve(self, language: str) -> bool:
        """Take a unit for `language` if one is free and no older ticket waits for it."""
        with self._lock:
            if self._total_locked() >= self.max_total or self._queue:
                return False
            self._take_locked(language)
            return True

    def release(self, language: str) -> None:
        """A container of `language` is gone (or never started): its unit goes to the oldest
        ticket, if any. Never call this while holding a pool's lock."""
        with self._lock:
            self._used[language] -= 1
            ticket = self._grant_locked()
            member = self._members.get(ticket.language) if ticket else None
        if member is not None:
            member.granted()
        elif ticket is not None:
            self.release(ticket.language)  # its pool is gone: pass the unit on

    def _grant_free_units(self) -> None:
        while True:
            with self._lock:
                ticket = self._grant_locked()
                member = self._members.get(ticket.language) if ticket else None
            if ticket is None:
                return
            if member is not None:
                member.granted()
            else:
                self.release(ticket.language)  # its pool is gone: pass the unit on
                return

    def _take_locked(self, language: str) -> None:
        self._used[language] += 1
        self._peak = max(self._peak, self._total_locked())

    def _grant_locked(self) -> Ticket | None:
        if not self._queue or self._total_locked() >= self.max_total:
            return None
        ticket = self._queue.popleft()
        ticket.granted = True
        self._take_locked(ticket.language)
        return ticket

    def _total_locked(self) -> int:
        return sum(self._used.values())

    # ------------------------------------------------------------------ waiting

    def enqueue(self, language: str) -> Ticket:
        """Queue a waiter of `language` and start making room for it in the background."""
        ticket = Ticket(language)
        with self._lock:
            self._queue.append(ticket)
            closed = self._closed
        # A unit may be free while tickets wait (try_reserve refuses anyone behind a ticket):
        # hand every free unit to the oldest tickets now, not at the next release.
        self._grant_free_units()
        if not closed:
            with contextlib.suppress(RuntimeError):  # closing: nobody needs the room any more
                self._room_maker.submit(self._make_room)
        return ticket

    def withdraw(self, ticket: Ticket) -> None:
        """The waiter left (it got a container some other way, or gave up)."""
        with self._lock:
            if ticket in self._queue:
                self._queue.remove(ticket)

    def oldest_waiter(self) -> str | None:
        """The language of the ticket that has waited longest, None when nobody waits."""
        with self._lock:
            return self._queue[0].language if self._queue else None

    def _make_room(self) -> None:
        """Evict idle containers of languages nobody waits for until every ticket is paid."""
        while True:
            with self._lock:
                if not self._queue or self._closed:
                    return
                waiting = {ticket.language for ticket in self._queue}
                members = [m for name, m in self._members.items() if name not in waiting]
            ranked = sorted(
                (rank, index, member)
                for index, member in enumerate(members)
                if (rank := member.idle_rank()) is not None
            )
            if not any(member.surrender_idle() for _, _, member in ranked):
                return  # everything is busy: the next container released goes to the queue

    # ------------------------------------------------------------------ observation

    def in_use(self, language: str | None = None) -> int:
        with self._lock:
            return self._total_locked() if language is None else self._used[language]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "max_total": self.max_total,
                "in_use": self._total_locked(),
                "peak": self._peak,
                "waiting": len(self._queue),
                "by_language": {name: count for name, count in self._used.items() if count},
            }
