"""The job runner: a bounded in-memory queue of job ids and worker threads that feed the pool.

The database is the truth and this queue only an index into it. A job is acknowledged (202) only
once it is committed as `queued`; a worker moves it `queued -> running` with a conditional UPDATE
(so a cancel and a claim can never both win), runs it on the pool and stores the result in one
commit. At start-up, `recover` fails what a dead process left `running` and re-queues what it left
`queued`, oldest first; nothing acknowledged is ever dropped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.errors import AppError, PoolExhaustedError, ServiceUnavailableError
from app.jobs import repository
from app.jobs.models import Job, JobStatus
from app.jobs.service import failure_values, outcome_values, run_request_for
from app.sandbox.stats import LatencyWindow

if TYPE_CHECKING:
    from app.observability.metrics import Metrics
    from app.sandbox.manager import SandboxManager

log = structlog.get_logger(__name__)

SHUTDOWN_REASON = "the service stopped before the job finished"
CANCEL_RETRY_S = 5.0
_EXHAUSTED_BACKOFF_S = 0.05


@dataclass
class _Active:
    cancel: bool = False
    shutdown: bool = False


@dataclass
class Slot:
    """A reserved place in the queue; set `job_id` once the job is committed to enqueue it."""

    job_id: str | None = None


def recover(session_factory: sessionmaker[Session]) -> tuple[int, list[str]]:
    """Fail the jobs a previous process left running; return that count and the queued ids."""
    with session_factory() as session:
        failed = repository.fail_running(session, reason=repository.RESTART_REASON)
        queued = repository.queued_ids(session)
        session.commit()
    if failed or queued:
        log.warning("jobs_recovered", failed_running=failed, requeued=len(queued))
    return failed, queued


class JobRunner:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        manager: SandboxManager,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.manager = manager
        self.metrics = metrics
        self.capacity = settings.job_queue_max
        self.workers = settings.effective_job_workers
        self._cond = threading.Condition()
        self._pending: deque[str] = deque()
        self._reserved = 0
        self._active: dict[str, _Active] = {}
        self._accepting = True
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._run_times = LatencyWindow(size=200)

    # ------------------------------------------------------------------ lifecycle

    def start(self, recovered: list[str] | None = None) -> None:
        """Queue the recovered ids first (they may exceed the capacity: they were acknowledged),
        then start the workers."""
        with self._cond:
            self._pending.extend(recovered or [])
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"job-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("job_runner_started", workers=self.workers, queued=len(self._pending))

    def stop(self, grace_s: float) -> None:
        """Stop taking jobs, let running ones finish up to `grace_s`, then stop and record them.

        Jobs still queued stay `queued` in the database and run after the next start.
        """
        deadline = time.monotonic() + grace_s
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
            while self._active and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            leftover = list(self._active)
            for job_id in leftover:
                self._active[job_id].shutdown = True
        for job_id in leftover:
            self.manager.cancel(job_id)
        join_deadline = time.monotonic() + 3.0
        for thread in self._threads:
            thread.join(timeout=max(0.0, join_deadline - time.monotonic()))
        with self._cond:
            stuck = list(self._active)
        if stuck:
            with self.session_factory() as session:
                repository.fail_running(session, reason=SHUTDOWN_REASON, job_ids=stuck)
                session.commit()
        log.info("job_runner_stopped", interrupted=len(leftover), queued_left=len(self._pending))

    # ------------------------------------------------------------------ submission

    @contextmanager
    def reserve(self) -> Iterator[Slot]:
        """Hold a queue place while the job is written; refuse when the queue is full.

        Raises:
            PoolExhaustedError: the queue is full (503 with Retry-After); nothing is stored.
            ServiceUnavailableError: the service is shutting down.
        """
        with self._cond:
            if not self._accepting:
                raise ServiceUnavailableError(
                    "the service is shutting down; retry shortly", headers={"Retry-After": "5"}
                )
            if len(self._pending) + self._reserved >= self.capacity:
                raise PoolExhaustedError(
                    "the job queue is full; retry later",
                    retry_after_s=round(self._expected_wait_locked()) or 1,
                    details={"queue_depth": len(self._pending), "capacity": self.capacity},
                )
            self._reserved += 1
        slot = Slot()
        try:
            yield slot
        finally:
            with self._cond:
                self._reserved -= 1
                if slot.job_id is not None:
                    self._pending.append(slot.job_id)
                    self._cond.notify()

    def cancel(self, job_id: str) -> None:
        """Stop a job this process is running, within about a second."""
        with self._cond:
            active = self._active.get(job_id)
            if active is None:
                return
            active.cancel = True
        if not self.manager.cancel(job_id):
            # Claimed but not yet inside a container: keep trying until the run starts or ends.
            threading.Thread(target=self._keep_cancelling, args=(job_id,), daemon=True).start()

    def _keep_cancelling(self, job_id: str) -> None:
        deadline = time.monotonic() + CANCEL_RETRY_S
        while time.monotonic() < deadline:
            with self._cond:
                if job_id not in self._active:
                    return
            if self.manager.cancel(job_id):
                return
            time.sleep(0.05)

    # ------------------------------------------------------------------ observation

    def _expected_wait_locked(self) -> float:
        summary = self._run_times.summary()
        if not summary["count"]:
            return 0.0
        average_s = float(summary["avg_ms"]) / 1000
        return round(average_s * (len(self._pending) + len(self._active)) / self.workers, 3)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "depth": len(self._pending),
                "capacity": self.capacity,
                "workers": self.workers,
                "running": len(self._active),
                "accepting": self._accepting,
                "expected_wait": self._expected_wait_locked(),
            }

    # ------------------------------------------------------------------ workers

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job_id = self._pending.popleft()
                active = self._active[job_id] = _Active()
            try:
                self._run_one(job_id, active)
            except Exception:  # one bad job must not kill the worker
                log.exception("job_worker_error", job_id=job_id)
                self._record_failure_safely(job_id)
            finally:
                with self._cond:
                    self._active.pop(job_id, None)
                    self._cond.notify_all()

    def _record_failure_safely(self, job_id: str) -> None:
        """Mark the job failed; if even that fails (the database is down), keep the worker alive:
        the job stays `running` in the database and the next start-up's recovery fails it."""
        try:
            self._record(job_id, failure_values("internal error while running the job"))
        except Exception:
            log.exception("job_failure_not_recorded", job_id=job_id)

    def _run_one(self, job_id: str, active: _Active) -> None:
        with self.session_factory() as session:
            if not repository.claim(session, job_id):
                return  # cancelled while queued, or already taken
            session.commit()
            job = repository.get(session, job_id)
        if job is None:
            return
        values = self._execute(job, active)
        if active.shutdown:
            values = failure_values(SHUTDOWN_REASON)
        elif active.cancel:
            values = {**values, "status": JobStatus.CANCELLED.value}
        self._record(job_id, values)
        if self.metrics is not None:
            self.metrics.observe_run(
                language=job.language,
                mode="async",
                outcome=values["status"],
                duration_s=values.get("execution_time_s"),
            )

    def _execute(self, job: Job, active: _Active) -> dict[str, Any]:
        request = run_request_for(self.settings, job)
        while True:
            if active.cancel or active.shutdown:
                return failure_values("cancelled before it started") | {
                    "status": JobStatus.CANCELLED.value
                }
            try:
                result = self.manager.run(request)
            except PoolExhaustedError:
                # Every container is busy with synchronous runs: a queued job waits its turn.
                time.sleep(_EXHAUSTED_BACKOFF_S)
                continue
            except AppError as exc:
                return failure_values(exc.message)
            self._run_times.add(result.duration_s * 1000)
            return outcome_values(result)

    def _record(self, job_id: str, values: dict[str, Any]) -> None:
        with self.session_factory() as session:
            repository.finish(session, job_id, values)
            session.commit()
