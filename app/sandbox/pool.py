"""ContainerPool: pre-warmed, hardened containers of one language, handed out one run at a time.

Policy lives here: who gets a container, when the pool grows or shrinks, and when a container is
reset, recycled or replaced. All state is guarded by one condition variable; Docker calls and agent
conversations happen outside it, on the caller's thread or the pool's own worker threads.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal

import docker
import structlog

from app.core.config import PoolMode, Settings
from app.core.errors import PoolExhaustedError, SandboxError, ServiceUnavailableError
from app.sandbox import engine
from app.sandbox.budget import ContainerBudget, Ticket
from app.sandbox.container import SandboxContainer
from app.sandbox.engines import Engine, EngineSet
from app.sandbox.languages import Language
from app.sandbox.limits import SandboxLimits
from app.sandbox.session import SandboxSession
from app.sandbox.stats import PoolCounters
from app.sandbox.types import OutputCallback, RunRequest, RunResult

log = structlog.get_logger(__name__)

WARM_AHEAD_RATIO = 0.8
MAX_FAILED_PINGS = 3
_live_pool_ids: set[str] = set()


@dataclass(frozen=True)
class PoolHealth:
    status: Literal["healthy", "degraded", "unhealthy"]
    detail: str
    data: dict[str, Any]


class ContainerPool:
    """Warm containers for one language; thread-safe under concurrent runs."""

    def __init__(
        self,
        settings: Settings,
        engines: docker.DockerClient | EngineSet,
        language: Language,
        budget: ContainerBudget | None = None,
    ) -> None:
        self.settings = settings
        self.language = language
        # A pool alone (tests, tools) gets a budget of its own; the manager passes the shared one.
        self.budget = budget or ContainerBudget(settings.pool_max_size)
        # The engines the manager shares between pools, or the one engine a client reaches.
        if not isinstance(engines, EngineSet):
            engines = EngineSet.single(engines, capacity=self.budget.max_total)
        self.engines = engines
        self.min_warm = settings.min_warm(language.name)
        self.max_size = min(settings.pool_max_size, self.budget.max_total)
        self.last_used = 0.0  # monotonic time of the last run handed out; 0 = never
        self.image = language.image(settings)
        self.limits = SandboxLimits.from_settings(settings, language)
        self.pool_id = uuid.uuid4().hex[:12]
        self.language_version = ""
        self.image_id = ""
        self.counters = PoolCounters()
        self._cond = threading.Condition()
        self._idle: deque[SandboxContainer] = deque()
        self._busy: dict[str, SandboxContainer] = {}
        self._runs: dict[str, SandboxContainer] = {}
        self._lent: set[str] = set()  # container ids held by sessions
        self._placed: dict[str, Engine] = {}  # container id -> the engine it runs on
        self._starting = 0
        self._waiters = 0
        self._last_start_error: SandboxError | None = None
        self._closed = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._executor = ThreadPoolExecutor(
            max_workers=max(4, self.max_size * 2), thread_name_prefix="pool"
        )

    @property
    def name(self) -> str:
        return self.language.name

    @property
    def client(self) -> docker.DockerClient:
        """The first healthy engine's client (SandboxError when every engine is down)."""
        client = self.engines.primary().client
        assert client is not None
        return client

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Check the engine and image, remove orphans, pre-warm in parallel, start the threads.

        Raises:
            SandboxError: the engine does not answer, the image is missing, or no container of
                the initial size could be started.
        """
        engine.ping_ms(self.client)
        # Which engines hold the image (same id everywhere); the id keys the build cache.
        self.image_id = self.engines.require_image(self.image)
        _live_pool_ids.add(self.pool_id)
        for placed in self.engines.engines:
            if placed.client is not None and self.engines.is_healthy(placed):
                engine.remove_orphans(placed.client, _live_pool_ids)
        self.budget.register(self)
        initial = max(self.settings.initial_warm(self.language.name), self.min_warm)
        futures = []
        with self._cond:
            for _ in range(min(initial, self.max_size)):
                if not self.budget.try_reserve(self.name):
                    break
                self._starting += 1
                futures.append(self._executor.submit(self._create_one))
        initial = len(futures)
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
                target=self._repeat_every,
                args=(interval, target),
                name=target.__name__,
                daemon=True,
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
        with self._cond:
            never_started, self._starting = self._starting, 0  # cancelled before they ran
        for _ in range(never_started):
            self.budget.release(self.name)
        with ThreadPoolExecutor(max_workers=8) as removers:
            list(removers.map(self._destroy, containers))
        self.budget.unregister(self)
        _live_pool_ids.discard(self.pool_id)
        log.info("pool_stopped", pool=self.pool_id)

    def _repeat_every(self, interval: float, target: Any) -> None:
        while not self._stop.wait(interval):
            try:
                target()
            except Exception:  # a background thread must outlive one bad round
                log.exception("pool_background_error", task=target.__name__)

    # ------------------------------------------------------------------ runs

    def run(self, request: RunRequest, on_output: OutputCallback | None = None) -> RunResult:
        """Run one script in a warm container.

        Args:
            request: the code, stdin and per-run limits; `run_id` is what `cancel` takes.
            on_output: for a live run (`request.stream`), called on this thread with each chunk
                of output as the program writes it (see SandboxContainer.run).
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
            result = container.run(request, on_output)
        except Exception:  # SandboxError, or anything unforeseen: never strand a busy slot
            self.engines.suspect(self._placed.get(container.container_id))
            self._retire(container, replace=True)
            raise
        finally:
            with self._cond:
                self._runs.pop(request.run_id, None)
                self.counters.executions += 1
        self.counters.run_time.add(result.duration_s * 1000)
        self._after_run(container)
        return result

    @contextlib.contextmanager
    def borrowed(self, run_id: str) -> Iterator[SandboxContainer]:
        """A warm container for a caller that talks to it directly for one exchange (a graded
        submission's cases in one lease), then back through the usual reset and proof.

        `cancel(run_id)` reaches it meanwhile, as it reaches a run. An exception out of the
        block retires the container (its state is unknown) and is raised on.

        Raises:
            PoolExhaustedError, SandboxError: as `acquire`.
        """
        container = self.acquire()
        with self._cond:
            self._runs[run_id] = container
        try:
            yield container
        except BaseException:
            self._retire(container, replace=True)
            raise
        finally:
            with self._cond:
                self._runs.pop(run_id, None)
                self.counters.executions += 1
        self._after_run(container)

    def lend(self, *, max_file_bytes: int, max_files: int) -> SandboxSession:
        """Hand out a warm container as a session until `take_back`; it counts against the
        budget (it stays in `_busy`) and no health check or reset touches it meanwhile.

        Raises:
            PoolExhaustedError, SandboxError: as `acquire`, or the agent refused the session
                (the container is then given back through the proof of clean).
        """
        container = self.acquire()
        try:
            container.open_session(max_file_bytes=max_file_bytes, max_files=max_files)
        except SandboxError:
            self._retire(container, replace=True, failure=True)
            raise
        with self._cond:
            self._lent.add(container.container_id)
        return SandboxSession(self, container)

    def take_back(self, container: SandboxContainer) -> None:
        """End a lent container's session: the agent wipes it and proves it clean, and only then
        is it reused (reuse mode); single-use mode, a dead or unclean one: destroyed, replaced."""
        with self._cond:
            self._lent.discard(container.container_id)
        if not container.dead:
            with contextlib.suppress(SandboxError):  # marked dead: retired below
                container.close_session()
        if container.dead:
            self._retire(container, replace=True, failure=True)
            return
        self._after_run(container)

    def cancel(self, run_id: str) -> bool:
        """Stop a run in progress; False when no container is running it."""
        with self._cond:
            container = self._runs.get(run_id)
        return container is not None and container.cancel(run_id)

    def send_stdin(self, run_id: str, data: str, eof: bool = False) -> bool:
        """More input for an interactive run in progress; False when no container runs it (yet)."""
        with self._cond:
            container = self._runs.get(run_id)
        return container is not None and container.send_stdin(run_id, data, eof)

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
            self.last_used = time.monotonic()
            self._warm_ahead_locked()
        self.counters.acquire_wait.add((time.monotonic() - started) * 1000)
        return container

    def _acquire_locked(self, deadline: float) -> SandboxContainer:
        ticket: Ticket | None = None
        try:
            while True:
                if self._closed:
                    raise ServiceUnavailableError("the sandbox pool is shutting down")
                container = self._pop_idle_alive_locked()
                if container is not None:
                    return container
                ticket = self._grow_for_waiter_locked(ticket)
                if self._last_start_error and not self._size_locked() and ticket is None:
                    raise self._last_start_error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.counters.exhausted += 1
                    raise PoolExhaustedError(retry_after_s=self._retry_after_s())
                self._cond.wait(remaining)
        finally:
            if ticket is not None and not ticket.granted:
                self.budget.withdraw(ticket)

    def _grow_for_waiter_locked(self, ticket: Ticket | None) -> Ticket | None:
        """Nothing warm for a waiter: start a container now (a cold start) if the budget has a
        unit, else queue a ticket so the budget takes one from an idle language for us."""
        if self._starting >= self._waiters or self._size_locked() >= self.max_size:
            return ticket
        if self._start_locked(1, cold=True):
            return ticket
        if ticket is None or ticket.granted:
            ticket = self.budget.enqueue(self.name)
        return ticket

    def granted(self) -> None:
        with self._cond:
            if not self._closed:
                self._starting += 1
                self.counters.cold_starts += 1
                self._executor.submit(self._create_one)
                return
        self.budget.release(self.name)

    def _pop_idle_alive_locked(self) -> SandboxContainer | None:
        while self._idle:
            container = self._idle.popleft()  # the longest idle: its runner is surely ready
            if container.is_alive() and self._engine_up(container):
                return container
            self._executor.submit(self._retire, container, True)
        return None

    def _engine_up(self, container: SandboxContainer) -> bool:
        placed = self._placed.get(container.container_id)
        return placed is None or self.engines.is_healthy(placed)

    def _after_run(self, container: SandboxContainer) -> None:
        single_use = self.settings.pool_mode is PoolMode.SINGLE_USE
        worn_out = container.runs >= self.settings.pool_max_runs_per_container
        drained = not self._engine_up(container)
        try:
            if single_use or worn_out or container.dead or drained:
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
            oldest = self.budget.oldest_waiter()
            if oldest is None or oldest == self.name or self._waiters:
                self._busy.pop(container.container_id, None)
                self._idle.append(container)
                self._cond.notify()
                return
            self.counters.evictions += 1  # the longest waiter is of another language
        self._retire(container, replace=False)

    # ------------------------------------------------------------------ growth and replacement

    def _size_locked(self) -> int:
        return len(self._idle) + len(self._busy) + self._starting

    def _start_locked(self, count: int, cold: bool = False) -> int:
        """Start up to `count` containers the budget pays for; how many were started."""
        started = 0
        while started < count and self.budget.try_reserve(self.name):
            self._starting += 1
            started += 1
            self._executor.submit(self._create_one)
        if cold:
            self.counters.cold_starts += started
        return started

    def _warm_ahead_locked(self) -> None:
        """When most containers are busy, start one more before anyone has to wait for it."""
        existing = len(self._idle) + len(self._busy)
        if (
            self._starting == 0
            and existing < self.max_size
            and len(self._busy) >= WARM_AHEAD_RATIO * max(existing, 1)
        ):
            self._start_locked(1)

    def _create_one(self) -> None:
        try:
            target = self.engines.place(self.image)
        except SandboxError as exc:
            self._start_failed(exc)
            return
        assert target.client is not None
        try:
            container = SandboxContainer.start(
                target.client,
                image=self.image,
                limits=self.limits,
                labels=engine.owner_labels(self.pool_id, self.language.name),
                name_prefix=f"warmbox-{self.language.name}-{self.pool_id}",
                timeout_s=self.settings.pool_start_timeout_s,
            )
        except SandboxError as exc:
            self.engines.unplace(target)
            self.engines.suspect(target)  # an engine that cannot start a sandbox may be dying
            self._start_failed(exc)
            return
        with self._cond:
            self._placed[container.container_id] = target
            self._starting -= 1
            self.counters.created += 1
            self._last_start_error = None
            self.language_version = container.language_version
            if not self._closed:
                self._idle.append(container)
                self._cond.notify()
                return
        self._destroy(container)

    def _start_failed(self, exc: SandboxError) -> None:
        log.warning("sandbox_start_failed", error=exc.message)
        with self._cond:
            self._starting -= 1
            self.counters.start_failures += 1
            self._last_start_error = exc
            self._cond.notify_all()
        self.budget.release(self.name)

    def _retire(self, container: SandboxContainer, replace: bool, failure: bool = False) -> None:
        """Remove a container for good and, if asked, warm a fresh one in its place."""
        with self._cond:
            self._busy.pop(container.container_id, None)
            if container in self._idle:
                self._idle.remove(container)
            if failure:
                self.counters.replacements += 1
        self._destroy(container)  # first, so that its unit pays for the replacement
        if replace:
            with self._cond:
                if not self._closed and self._size_locked() < self.max_size:
                    self._start_locked(1)

    def _destroy(self, container: SandboxContainer) -> None:
        with self._cond:
            placed = self._placed.pop(container.container_id, None)
        if placed is not None and not self.engines.is_healthy(placed):
            # A drained engine is not waited for: the container is removed when it answers again.
            container.dead = True
            container.channel.close()
            self.engines.forget(placed, container.container_id)
        else:
            try:
                container.destroy()
            except SandboxError as exc:
                log.warning("sandbox_destroy_failed", container=container.name, error=exc.message)
                if placed is not None:  # its engine may be dying: remove it when it answers
                    self.engines.forget(placed, container.container_id)
                    self.engines.suspect(placed)
                    placed = None
            if placed is not None:
                self.engines.unplace(placed)
        with self._cond:
            self.counters.destroyed += 1
        self.budget.release(self.name)

    def drain(self, down: Engine) -> int:
        """`down` stopped answering: its idle containers go at once and are replaced on the other
        engines; a busy one is retired after its run (which its engine's death likely ends).
        Returns how many were replaced now."""
        with self._cond:  # taken out of the idle queue here, so no run can pick one meanwhile
            victims = [c for c in self._idle if self._placed.get(c.container_id) is down]
            for container in victims:
                self._idle.remove(container)
        for container in victims:
            self._retire(container, replace=True, failure=True)
        if victims:
            log.warning("pool_drained", language=self.name, engine=down.url, count=len(victims))
        return len(victims)

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
            container.failed_pings += 1
        if container.dead or container.failed_pings >= MAX_FAILED_PINGS:
            if not container.dead and container.deep_check():
                container.failed_pings = 0
            else:
                log.warning("sandbox_unhealthy_replaced", container=container.name)
                self._retire(container, replace=True, failure=True)
                return
        elif healthy:
            container.failed_pings = 0
        with self._cond:
            self._busy.pop(container.container_id, None)
            if self._closed:
                return
            self._idle.appendleft(container)
            self._cond.notify()

    def spare(self) -> int:
        """Containers a caller could have without waiting for a run or a reset to end: the idle
        ones and those the pool may still start under its own cap (the budget may refuse).
        Background work (graded submissions) reads it to leave some to synchronous runs."""
        with self._cond:
            return len(self._idle) + max(0, self.max_size - self._size_locked())

    def warm_floor(self, now: float | None = None) -> int:
        """How many containers this language keeps: its minimum, and one while recently used."""
        now = time.monotonic() if now is None else now
        recent = self.last_used and now - self.last_used < self.settings.pool_language_warm_s
        return max(self.min_warm, 1 if recent else 0)

    def reclaim_idle(self) -> None:
        """Give back to the budget containers idle past the idle timeout, down to the warm
        floor, and start what the minimum lacks when the budget has room for it."""
        now = time.monotonic()
        with self._cond:
            existing = len(self._idle) + len(self._busy)
            excess = existing - self.warm_floor(now)
            stale = [c for c in self._idle if now - c.last_used > self.settings.pool_idle_timeout_s]
            victims = stale[: max(excess, 0)]
            for container in victims:
                self._idle.remove(container)
            self.counters.reclaimed += len(victims)
        for container in victims:
            self._destroy(container)
        with self._cond:
            missing = self.min_warm - self._size_locked()
            if missing > 0 and not self._closed:
                self._start_locked(missing)
        if victims:
            log.info("pool_reclaimed", count=len(victims), pool=self.pool_id)

    def idle_rank(self) -> tuple[int, float] | None:
        """For the budget: pools above their warm floor give up an idle container first, then
        the language used least recently."""
        with self._cond:
            # A pool whose own callers wait keeps what it has: its idle container (perhaps the
            # one just started for them) is theirs, not another language's.
            if self._closed or not self._idle or self._waiters:
                return None
            above_floor = len(self._idle) + len(self._busy) > self.warm_floor()
            return (0 if above_floor else 1, self.last_used)

    def surrender_idle(self) -> bool:
        """Destroy the longest-idle container so that another language can use its unit."""
        with self._cond:
            if self._closed or not self._idle or self._waiters:
                return False
            container = self._idle.popleft()
            self.counters.evictions += 1
        log.info("sandbox_evicted", language=self.name, container=container.name)
        self._destroy(container)
        return True

    # ------------------------------------------------------------------ observation

    def _retry_after_s(self) -> int:
        run_p95_ms = float(self.counters.run_time.summary()["p95_ms"])
        return max(1, round(run_p95_ms / 1000))

    def stats(self) -> dict[str, Any]:
        with self._cond:
            gauges = {
                "available": len(self._idle),
                "in_use": len(self._busy),
                "sessions": len(self._lent),
                "starting": self._starting,
                "total": len(self._idle) + len(self._busy),
            }
        return {
            "language": self.language.name,
            "language_version": self.language_version,
            "image": self.image,
            "mode": self.settings.pool_mode.value,
            "min_size": self.min_warm,
            "max_size": self.max_size,
            "budget_in_use": self.budget.in_use(self.name),
            **gauges,
            **self.counters.snapshot(),
        }

    def health(self) -> PoolHealth:
        stats = self.stats()
        data = {key: stats[key] for key in ("available", "in_use", "starting", "total")}
        if stats["total"] == 0 and stats["starting"] == 0 and self._last_start_error:
            return PoolHealth("unhealthy", self._last_start_error.message, data)
        if stats["total"] == 0 and stats["starting"] == 0 and self.min_warm == 0:
            return PoolHealth("healthy", "nothing warm; a run starts a container", data)
        if stats["available"] == 0:
            can_grow = stats["total"] + stats["starting"] < self.max_size
            detail = "no container free; more are starting" if can_grow else "no container free"
            return PoolHealth("degraded", detail, data)
        return PoolHealth("healthy", "ok", data)

    def ping_engine(self) -> float:
        return engine.ping_ms(self.client)

    def placement(self) -> dict[str, int]:
        """How many of this pool's containers each engine holds (by engine name)."""
        with self._cond:
            placed = list(self._placed.values())
        counts = dict.fromkeys((e.name for e in self.engines.engines), 0)
        for where in placed:
            counts[where.name] += 1
        return counts
