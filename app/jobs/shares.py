"""Per-user shares of the sandboxes: how many runs (synchronous runs plus running jobs) each user
has in progress, and whether one more may start.

Rate limits count requests; a share counts work in progress, so one user with long runs cannot
hold every container. The bookkeeping sits behind the small `RunShares` interface: this process
keeps it in memory; several nodes (issue 14) keep the same counters in Redis
(`app.jobs.shares_redis`). Callers on the event loop go through `off_loop`, so a Redis round trip
(or its timeout while Redis is down) never stalls the loop, and one node pays nothing for it.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import anyio

from app.core.errors import QuotaExceededError

ReleaseListener = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True)
class ShareTicket:
    """One run counted against its user's share until it is released."""

    user_id: str
    number: int
    ends_by: float = field(compare=False)  # time.monotonic() by which the run will have ended


class RunShares(Protocol):
    """What the synchronous path and the job queue need from the share bookkeeping."""

    limit: int
    remote: bool  # each call is a network round trip: keep it off the event loop

    def try_acquire(self, user_id: str, *, run_timeout_s: float) -> ShareTicket | None:
        """Count one more run for `user_id`, or None when the user already holds `limit`."""
        ...

    def release(self, ticket: ShareTicket) -> None:
        """Stop counting the run; listeners hear that the user has room again."""
        ...

    def running(self, user_id: str) -> int: ...

    def seconds_until_free(self, user_id: str) -> int:
        """A Retry-After for a refused caller: when the user's earliest run ends at the latest."""
        ...

    def on_release(self, listener: ReleaseListener) -> None: ...


class InMemoryRunShares:
    """RunShares for one process; `limit` 0 counts runs but never refuses."""

    remote = False

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._held: dict[str, dict[int, float]] = {}
        self._numbers = itertools.count(1)
        self._listeners: list[ReleaseListener] = []

    def try_acquire(self, user_id: str, *, run_timeout_s: float) -> ShareTicket | None:
        with self._lock:
            held = self._held.setdefault(user_id, {})
            if self.limit and len(held) >= self.limit:
                return None
            ticket = ShareTicket(user_id, next(self._numbers), time.monotonic() + run_timeout_s)
            held[ticket.number] = ticket.ends_by
            return ticket

    def release(self, ticket: ShareTicket) -> None:
        with self._lock:
            held = self._held.get(ticket.user_id, {})
            if held.pop(ticket.number, None) is None:
                return  # released twice: count it once
            if not held:
                del self._held[ticket.user_id]
            listeners = list(self._listeners)
        for listener in listeners:  # outside the lock: a listener may take its own
            listener(ticket.user_id)

    def running(self, user_id: str) -> int:
        with self._lock:
            return len(self._held.get(user_id, {}))

    def seconds_until_free(self, user_id: str) -> int:
        with self._lock:
            ends = list(self._held.get(user_id, {}).values())
        if not ends:
            return 1
        return max(1, math.ceil(min(ends) - time.monotonic()))

    def on_release(self, listener: ReleaseListener) -> None:
        with self._lock:
            self._listeners.append(listener)


async def off_loop(shares: RunShares, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`call` (a method of `shares`) from the event loop: in a worker thread when the bookkeeping
    is remote, directly when it is this process's memory."""
    if shares.remote:
        return await anyio.to_thread.run_sync(partial(call, *args, **kwargs))
    return call(*args, **kwargs)


async def take_share(
    shares: RunShares, user_id: str, *, run_timeout_s: float, what: str = "runs"
) -> ShareTicket:
    """One more share for `user_id` (sync runs, interactive runs and sessions all take it here),
    asked off the event loop when the bookkeeping is remote.

    Raises:
        QuotaExceededError: the user already holds MAX_CONCURRENT_RUNS_PER_USER shares.
    """
    ticket = await off_loop(shares, shares.try_acquire, user_id, run_timeout_s=run_timeout_s)
    if ticket is None:
        raise QuotaExceededError(
            f"you already have {shares.limit} {what} in progress; "
            "retry when one of them has finished",
            retry_after_s=await off_loop(shares, shares.seconds_until_free, user_id),
            details={"max_concurrent_runs_per_user": shares.limit},
        )
    return ticket
