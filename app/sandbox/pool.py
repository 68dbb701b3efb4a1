"""ContainerPool: pre-warmed, hardened containers of one language, handed out one run at a time.

Policy lives here: who gets a container, when the pool grows or shrinks, and when a container is
reset, recycled or replaced. All state is guarded by one condition variable; Docker calls and agent
conversations happen outside it, on the caller's thread or the pool's own worker threads.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal

import docker
import structlog

from app.core.config import PoolMode, Settings
from app.core.errors import PoolExhaustedError, SandboxError, ServiceUnavailableError
from app.sandbox import engine
from app.sandbox.container import SandboxContainer
from app.sandbox.languages import Language
from app.sandbox.limits import SandboxLimits
from app.sandbox.stats import PoolCounters
from app.sandbox.types import RunRequest, RunResult

log = structlog.get_logger(__name__)

WARM_AHEAD_RATIO = 0.8
HEALTH_STRIKES = 3
_live_pool_ids: set[str] = set()


@dataclass(frozen=True)
class PoolHealth:
    status: Literal["healthy", "degraded", "unhealthy"]
    detail: str
    data: dict[str, Any]


class ContainerPool:
    """Warm containers for one language; thread-safe under concurrent runs."""

    def __init__(self, settings: Settings, client: docker.DockerClient, language: Language) -> None:
        self.settings = settings
        self.client = client
        self.language = language
        self.image = language.image(settings)
        self.limits = SandboxLimits.from_settings(settings)
        self.pool_id = uuid.uuid4().hex[:12]
        self.language_version = ""
        self.counters = PoolCounters()
        self._cond = threading.Condition()
        self._idle: deque[SandboxContainer] = deque()
        self._busy: dict[str, SandboxContainer] = {}
        self._runs: dict[str, SandboxContainer] = {}
        self._starting = 0
        self._waiters = 0
        self._last_start_error: SandboxError | None = None
        self._closed = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._executor = ThreadPoolExecutor(
            max_workers=max(4, settings.pool_max_size * 2), thread_name_prefix="pool"
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Check the engine and image, remove orphans, pre-warm in parallel, start the threads.

        Raises:
            SandboxError: the engine does not answer, the image is missing, or no container of
                the initial size could be started.
        """
        engine.ping_ms(self.client)
        engine.require_image(self.client, self.image)
        _live_pool_ids.add(self.pool_id)
        engine.remove_orphans(self.client, _live_pool_ids)
        initial = max(self.settings.pool_initial_size, self.settings.pool_min_size)
        with self._cond:
            self._starting += initial
        futures = [self._executor.submit(self._create_one) for _ in range(initial)]
        wait(futures, timeout=self.settings.pool_start_timeout_s * 2)
        with self._cond:
            failed = bool(initial and not self._idle)
            error = self._last_start_error or SandboxError("no sandbox could be started")
        if failed:
            self.shutdown()  # late starters must not land in a pool nobody owns
            raise error
        for target, interval in (
            (self.check_health, self.settings.pool_health_check_interval_s),
            (self.reclaim_idle, self.settings.pool_idle_reclaim_interval_s),
        ):
            thread = threading.Thread(
                target=self._every, args=(interval, target), name=target.__name__, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info("pool_started", pool=self.pool_id, language=self.language.name, size=initial)

    def shutdown(self) -> None:
        """Stop the threads and remove every container this pool made."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            containers = list(self._idle) + list(self._busy.values())
            self._idle.clear()
            self._busy.clear()
            self._cond.notify_all()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._executor.shutdown(wait=True, cancel_futures=True)
        with ThreadPoolExecutor(max_workers=8) as removers:
            list(removers.map(self._destroy, containers))
        _live_pool_ids.discard(self.pool_id)
        log.info("pool_stopped", pool=self.pool_id)

    def _every(self, interval: float, target: Any) -> None:
        while not self._stop.wait(interval):
            try:
                target()
            except Exception:  # a background thread must outlive one bad round
                log.exception("pool_background_error", task=target.__name__)

    # ------------------------------------------------------------------ runs

    def run(self, request: RunRequest) -> RunResult:
        """Run one script in a warm container.

        Args:
            request: the code, stdin and per-run limits; `run_id` is what `cancel` takes.
        Returns:
            The result, whatever the script did (timeouts and crashes are flags, not errors).
        Raises:
            PoolExhaustedError: every container stayed busy for the acquire timeout.
            SandboxError: the sandbox failed underneath the run; the container is replaced.
        """
        container = self.acquire()
        with self._cond:
            self._runs[request.run_id] = container
        try:
            result = container.run(request)
        except Exception:  # SandboxError, or anything unforeseen: never strand a busy slot
            self._retire(container, replace=True)
            raise
        finally:
            with self._cond:
                self._runs.pop(request.run_id, None)
                self.counters.executions += 1
        self.counters.run_time.add(result.duration_s * 1000)
        self._after_run(container)
        return result

    def cancel(self, run_id: str) -> bool:
        """Stop a run in progress; False when no container is running it."""
        with self._cond:
            container = self._runs.get(run_id)
        return container is not None and container.cancel(run_id)

    def acquire(self, timeout_s: float | None = None) -> SandboxContainer:
        """Hand out an idle container, growing up to the max size, else wait.

        Raises:
            PoolExhaustedError: nothing became free within the acquire timeout.
            SandboxError: the pool is empty and containers cannot be started.
        """
        timeout = self.settings.pool_acquire_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        deadline = started + timeout
        with self._cond:
            self._waiters += 1
            try:
                container = self._acquire_locked(deadline)
            finally:
                self._waiters -= 1
            self._busy[container.container_id] = container
            self._warm_ahead_locked()
        self.counters.acquire_wait.add((time.monotonic() - started) * 1000)
        return container

    def _acquire_locked(self, deadline: float) -> SandboxContainer:
        while True:
            if self._closed:
                raise ServiceUnavailableError("the sandbox pool is shutting down")
            container = self._pop_idle_alive_locked()
            if container is not None:
                return container
            if self._starting < self._waiters and self._size_locked() < self.settings.pool_max_size:
                self._start_locked(1)
            if self._last_start_error and not self._size_locked():
                raise self._last_start_error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.counters.exhausted += 1
                raise PoolExhaustedError(retry_after_s=self._retry_after_s())
            self._cond.wait(remaining)

    def _pop_idle_alive_locked(self) -> SandboxContainer | None:
        while self._idle:
            container = self._idle.popleft()  # the longest idle: its runner is surely ready
            if container.is_alive():
                return container
            self._executor.submit(self._retire, container, True)
        return None

    def _after_run(self, container: SandboxContainer) -> None:
        single_use = self.settings.pool_mode is PoolMode.SINGLE_USE
        worn_out = container.runs >= self.settings.pool_max_runs_per_container
        try:
            if single_use or worn_out or container.dead:
                self._executor.submit(self._retire, container, True)
            else:
                self._executor.submit(self._finish_reset, container)
        except RuntimeError:  # shutting down: the executor takes no more work
            self._destroy(container)

    def _finish_reset(self, container: SandboxContainer) -> None:
        report = container.await_reset()
        self.counters.reset_time.add(report.wall_ms)
        self.counters.agent_reset_time.add(report.agent_ms)
        if not report.clean:
            with self._cond:
                self.counters.reset_failures += 1
            log.warning("sandbox_reset_failed", container=container.name, problems=report.problems)
            self._retire(container, replace=True, failure=True)
            return
        with self._cond:
            self.counters.resets += 1
            if self._closed:
                return
            self._busy.pop(container.container_id, None)
            self._idle.append(container)
            self._cond.notify()

    # ------------------------------------------------------------------ growth and replacement

    def _size_locked(self) -> int:
        return len(self._idle) + len(self._busy) + self._starting

    def _start_locked(self, count: int) -> None:
        self._starting += count
        for _ in range(count):
            self._executor.submit(self._create_one)

    def _warm_ahead_locked(self) -> None:
        """When most containers are busy, start one more before anyone has to wait for it."""
        existing = len(self._idle) + len(self._busy)
        if (
            self._starting == 0
            and existing < self.settings.pool_max_size
            and len(self._busy) >= WARM_AHEAD_RATIO * max(existing, 1)
        ):
            self._start_locked(1)

    def _create_one(self) -> None:
        try:
            container = SandboxContainer.start(
                self.client,
                image=self.image,
                limits=self.limits,
                labels=engine.owner_labels(self.pool_id, self.language.name),
                name_prefix=f"warmbox-{self.language.name}-{self.pool_id}",
                timeout_s=self.settings.pool_start_timeout_s,
            )
        except SandboxError as exc:
            log.warning("sandbox_start_failed", error=exc.message)
            with self._cond:
                self._starting -= 1
                self.counters.start_failures += 1
                self._last_start_error = exc
                self._cond.notify_all()
            return
        with self._cond:
            self._starting -= 1
            self.counters.created += 1
            self._last_start_error = None
            self.language_version = container.language_version
            if not self._closed:
                self._idle.append(container)
                self._cond.notify()
                return
        self._destroy(container)

    def _retire(self, container: SandboxContainer, replace: bool, failure: bool = False) -> None:
        """Remove a container for good and, if asked, warm a fresh one in its place."""
        with self._cond:
            self._busy.pop(container.container_id, None)
            if container in self._idle:
                self._idle.remove(container)
            if failure:
                self.counters.replacements += 1
            if replace and not self._closed and self._size_locked() < self.settings.pool_max_size:
                self._start_locked(1)
        self._destroy(container)

    def _destroy(self, container: SandboxContainer) -> None:
        try:
            container.destroy()
        except SandboxError as exc:
            log.warning("sandbox_destroy_failed", container=container.name, error=exc.message)
        with self._cond:
            self.counters.destroyed += 1

    # ------------------------------------------------------------------ background work

    def check_health(self) -> None:
        """Ping every idle container; three failed pings and a failed deep check replace it."""
        with self._cond:
            snapshot = list(self._idle)
        for container in snapshot:
            with self._cond:
                if container not in self._idle:
                    continue  # handed out meanwhile: its run is its health check
                self._idle.remove(container)
                self._busy[container.container_id] = container
            self._check_one(container)

    def _check_one(self, container: SandboxContainer) -> None:
        healthy = container.ping()
        if not healthy:
            with self._cond:
                self.counters.health_check_failures += 1
            container.strikes += 1
        if container.dead or container.strikes >= HEALTH_STRIKES:
            if not container.dead and container.deep_check():
                container.strikes = 0
            else:
                log.warning("sandbox_unhealthy_replaced", container=container.name)
                self._retire(container, replace=True, failure=True)
                return
        elif healthy:
            container.strikes = 0
        with self._cond:
            self._busy.pop(container.container_id, None)
            if self._closed:
                return
            self._idle.appendleft(container)
            self._cond.notify()

    def reclaim_idle(self) -> None:
        """Shrink toward the min size: remove containers idle past the idle timeout."""
        now = time.monotonic()
        with self._cond:
            existing = len(self._idle) + len(self._busy)
            excess = existing - self.settings.pool_min_size
            stale = [c for c in self._idle if now - c.last_used > self.settings.pool_idle_timeout_s]
            victims = stale[: max(excess, 0)]
            for container in victims:
                self._idle.remove(container)
            missing = self.settings.pool_min_size - (existing - len(victims) + self._starting)
            if missing > 0 and not self._closed:
                self._start_locked(missing)
        for container in victims:
            self._destroy(container)
        if victims:
            log.info("pool_reclaimed", count=len(victims), pool=self.pool_id)

    # ------------------------------------------------------------------ observation

    def _retry_after_s(self) -> int:
        run_p95_ms = float(self.counters.run_time.summary()["p95_ms"])
        return max(1, round(run_p95_ms / 1000))

    def stats(self) -> dict[str, Any]:
        with self._cond:
            gauges = {
                "available": len(self._idle),
                "in_use": len(self._busy),
                "starting": self._starting,
                "total": len(self._idle) + len(self._busy),
            }
        return {
            "language": self.language.name,
            "language_version": self.language_version,
            "image": self.image,
            "mode": self.settings.pool_mode.value,
            "min_size": self.settings.pool_min_size,
            "max_size": self.settings.pool_max_size,
            **gauges,
            **self.counters.snapshot(),
        }

    def health(self) -> PoolHealth:
        stats = self.stats()
        data = {key: stats[key] for key in ("available", "in_use", "starting", "total")}
        if stats["total"] == 0 and stats["starting"] == 0 and self._last_start_error:
            return PoolHealth("unhealthy", self._last_start_error.message, data)
        if stats["available"] == 0:
            can_grow = stats["total"] + stats["starting"] < self.settings.pool_max_size
            detail = "no container free; more are starting" if can_grow else "no container free"
            return PoolHealth("degraded", detail, data)
        return PoolHealth("healthy", "ok", data)

    def ping_engine(self) -> float:
        return engine.ping_ms(self.client)
