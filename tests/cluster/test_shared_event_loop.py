"""A hung Redis (it accepts connections and never answers) costs the callers on the event loop
their timeout in a worker thread, never the loop itself: other requests keep being served."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from app.events.redis_log import RedisEventLog
from app.jobs.shares import InMemoryRunShares, off_loop
from app.jobs.shares_redis import RedisRunShares


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A loopback TCP server that accepts connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


async def longest_stall(call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """How long `call` took, and the longest the loop went without running a 10 ms ticker."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    started = time.monotonic()
    await call()
    took = time.monotonic() - started
    done.set()
    await ticking
    return took, max(gaps)


def test_a_share_asked_of_a_hung_redis_waits_off_the_event_loop(hung_redis: str) -> None:
    shares = RedisRunShares(hung_redis, 2)
    try:

        async def acquire() -> object:
            return await off_loop(shares, shares.try_acquire, "ann", run_timeout_s=10)

        took, stall = asyncio.run(longest_stall(acquire))
    finally:
        shares.close()
    assert took >= 0.4  # it did wait for Redis' timeout (then counted in memory)
    assert stall < 0.25, f"the event loop stood still for {stall:.2f} s"


def test_a_share_in_memory_is_taken_on_the_loop_itself() -> None:
    shares = InMemoryRunShares(1)

    async def acquire() -> object:
        return await off_loop(shares, shares.try_acquire, "ann", run_timeout_s=10)

    assert asyncio.run(acquire()) is not None
    assert shares.running("ann") == 1


def test_a_follower_waiting_on_a_hung_redis_leaves_the_event_loop_free(hung_redis: str) -> None:
    log = RedisEventLog(hung_redis, namespace="warmbox-test-hung")
    try:

        async def follow() -> None:
            await log.wait("job", "j", 0, timeout_s=1.0)

        took, stall = asyncio.run(longest_stall(follow))
    finally:
        log.close()
    assert 0.9 <= took < 3
    assert stall < 0.25, f"the event loop stood still for {stall:.2f} s"
    assert not log.replay("job", "j", 0).known
