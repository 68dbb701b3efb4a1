"""How many password hashes may run at once: argon2id holds 64 MiB and a core for its whole run.

Unbounded, 30 concurrent failed logins raised the server from 114 to 932 MB and stalled /health
for 4.6 s. The gate lets about one hash per core run (PASSWORD_HASH_CONCURRENCY), keeps at most
PASSWORD_HASH_QUEUE_MAX more waiting, each for at most PASSWORD_HASH_WAIT_S, and refuses the rest
with 503 and Retry-After: a burst costs a bounded amount of memory and CPU, and the event loop
(which never hashes: callers run in worker threads) stays free for everyone else.

It is process-wide, like the memory and cores it protects; the app configures it from its
settings when it starts. Callers (login, sign-up, the CLI, the admin bootstrap) are worker
threads, never the event loop; they hand the hash to the gate's own threads and wait.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from app.core.config import Settings
from app.core.errors import ServiceUnavailableError

log = structlog.get_logger(__name__)

BUSY_MESSAGE = "too many sign-ins at once; retry shortly"
HASH_THREAD_NICE = 10
T = TypeVar("T")


# The CPU quota of the process's cgroup: v2 `cpu.max` ("max 100000" or "200000 100000"), else
# v1's quota and period files. A container limited with --cpus (Render, Docker) sees every host
# core in its affinity mask but may use only its quota.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _cgroup_cpu_quota() -> float | None:
    try:
        if CGROUP_CPU_MAX.exists():
            quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int(CGROUP_V1_QUOTA.read_text())
        return None if quota_us < 0 else quota_us / int(CGROUP_V1_PERIOD.read_text())
    except (OSError, ValueError):
        return None


def available_cores() -> int:
    """The cores this process may use: its CPU set, bounded by its cgroup's CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores or 1, max(1, math.ceil(quota)))
    return cores or 1


class HashGate:
    """Hashes run on `slots` dedicated threads; at most `queue_max` more wait, each `wait_s`.

    The threads are niced (+10): the event loop, which answers /health and every other request,
    wins the CPU over a burst of hashes instead of queueing behind it.
    """

    def __init__(self, *, slots: int, queue_max: int, wait_s: float) -> None:
        self.slots = slots
        self.queue_max = queue_max
        self.wait_s = wait_s
        self._executor = ThreadPoolExecutor(
            max_workers=slots, thread_name_prefix="password-hash", initializer=_lower_priority
        )
        self._lock = threading.Lock()
        self._pending = 0

    def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on a hashing thread, or ServiceUnavailableError (503) when the line
        is full or no thread is free within `wait_s`. Blocks: call it from a worker thread."""
        with self._lock:
            if self._pending >= self.slots + self.queue_max:
                raise self._busy("queue_full")
            self._pending += 1
        try:
            return self._run_in_line(function, args)
        finally:
            with self._lock:
                self._pending -= 1

    def _run_in_line(self, function: Callable[..., T], args: tuple[Any, ...]) -> T:
        started = threading.Event()

        def timed() -> T:
            started.set()
            return function(*args)

        future = self._executor.submit(timed)
        if not started.wait(self.wait_s) and future.cancel():
            raise self._busy("deadline")
        return future.result()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def retire(self) -> None:
        """Take no new work; hashes already handed to it still finish, then its threads end."""
        self._executor.shutdown(wait=False)

    def _busy(self, reason: str) -> ServiceUnavailableError:
        log.warning("password_hashing_busy", reason=reason, slots=self.slots)
        retry_after = max(1, round(self.wait_s))
        return ServiceUnavailableError(BUSY_MESSAGE, headers={"Retry-After": str(retry_after)})


def _lower_priority() -> None:
    # Linux nice values are per thread: this lowers only the hashing thread, never the loop.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICE)


def gate_for(settings: Settings) -> HashGate:
    return HashGate(
        slots=settings.password_hash_concurrency or available_cores(),
        queue_max=settings.password_hash_queue_max,
        wait_s=settings.password_hash_wait_s,
    )


_gate = HashGate(slots=available_cores(), queue_max=16, wait_s=5.0)


def configure(settings: Settings) -> HashGate:
    """Size the process-wide gate from the settings (at start-up; tests may call it again)."""
    global _gate
    previous, _gate = _gate, gate_for(settings)
    previous.retire()  # its threads would otherwise outlive it (tests build many apps)
    return _gate


def current_gate() -> HashGate:
    return _gate
