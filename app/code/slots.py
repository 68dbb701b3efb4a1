"""SyncRunSlots: how many synchronous runs may block a thread at once.

A synchronous run holds a thread for as long as the code runs. These slots bound those threads,
so long runs can never starve the shared threadpool that every other request uses. Built once in
the lifespan, next to the pool and the job workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio

from app.core.errors import PoolExhaustedError

T = TypeVar("T")


class SyncRunSlots:
    """At most `size` synchronous runs at once; a caller waits for a slot at most `wait_s`."""

    def __init__(self, *, size: int, wait_s: float) -> None:
        self.size = size
        self.wait_s = wait_s
        self._semaphore = anyio.Semaphore(size)
        self._threads = anyio.CapacityLimiter(size)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        acquired = False
        with anyio.move_on_after(self.wait_s):
            await self._semaphore.acquire()
            acquired = True
        if not acquired:
            raise PoolExhaustedError("every sandbox is busy; retry shortly")
        try:
            yield
        finally:
            self._semaphore.release()

    async def run(self, blocking: Callable[[], T]) -> T:
        """Run `blocking` in one of the slots' threads.

        Raises:
            PoolExhaustedError: no slot freed up within `wait_s`.
        """
        async with self._slot():
            return await anyio.to_thread.run_sync(blocking, limiter=self._threads)
