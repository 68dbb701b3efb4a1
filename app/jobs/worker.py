"""JobWorkerPool: the threads that take queued jobs, run them on the sandbox pool and store them.

This is the only module that turns a queued job into a run; it imports the queue, never the
reverse. A worker moves a job `queued -> running` with a conditional UPDATE that also takes the
job's lease (so a cancel and a claim, or two nodes, can never both win), runs it and stores the
result in one commit that releases the lease. `WorkLeases` (app/jobs/leasing.py) claims jobs other
nodes accepted, renews this node's leases and fails the jobs of a node that died. A new kind of
background work (graded submissions, webhook deliveries) gets a worker module like this one, fed
by a queue the service writes to by id.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.errors import AppError, PoolExhaustedError
from app.jobs import repository
from app.jobs.callbacks import notify_finished
from app.jobs.leasing import LeasedKind, WorkLeases, recover_own
from app.jobs.models import Job, JobStatus
from app.jobs.queue import JobQueue, QueuedJob, TakenJob
from app.jobs.results import failure_values, outcome_values, run_request_for
from app.jobs.schemas import JobRead

if TYPE_CHECKING:
    from app.events.log import EventLog
    from app.observability.metrics import Metrics
    from app.sandbox.manager import SandboxManager

log = structlog.get_logger(__name__)

SHUTDOWN_REASON = "the service stopped before the job finished"
CANCEL_RETRY_S = 5.0
EXHAUSTED_BACKOFF_S = 0.05
JOIN_TIMEOUT_S = 3.0


def _describe(session: Session, job_ids: list[str]) -> list[QueuedJob]:
    return [QueuedJob(*row) for row in repository.queued_jobs(session, job_ids)]


def _fail(session: Session, job_ids: list[str], reason: str) -> list[str]:
    failed = repository.fail_started(session, job_ids, reason)
    notify_finished(session, failed)  # the webhook goes out in the commit that fails the job
    return failed


JOBS = LeasedKind(
    name="job",
    table=repository.TABLE,
    queued=repository.QUEUED,
    started=repository.STARTED,
    order_by=repository.CLAIM_ORDER,
    describe=_describe,
    fail=_fail,
    expired_reason=repository.EXPIRED_REASON,
    restart_reason=repository.RESTART_REASON,
)


def recover(session_factory: sessionmaker[Session], owner: str) -> tuple[int, list[QueuedJob]]:
    """Fail the jobs this node left running; return that count and the queued jobs to index
    (this node's and those no node holds)."""
    failed, queued = recover_own(session_factory, JOBS, owner)
    return len(failed), queued


class JobWorkerPool:
    """`settings.effective_job_workers` threads feeding the sandbox pool from a JobQueue."""

    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        manager: SandboxManager,
        queue: JobQueue,
        metrics: Metrics | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.manager = manager
        self.queue = queue
        self.metrics = metrics
        self.events = events  # followers of a job (SSE) read what the run prints as it prints it
        self.owner = settings.effective_node_id
        self._threads: list[threading.Thread] = []
        queue.on_cancel(self._stop_run)
        self.leases = WorkLeases(
            kind=JOBS,
            queue=queue,
            session_factory=session_factory,
            owner=self.owner,
            lease_s=settings.lease_ttl_s,
            renew_interval_s=settings.lease_renew_interval_s,
            poll_interval_s=settings.work_poll_interval_s,
            on_failed=lambda job_ids: [self._publish_end(job_id) for job_id in job_ids],
        )

    def start(self) -> None:
        self.leases.start()
        for number in range(self.queue.workers):
            thread = threading.Thread(target=self._work, name=f"job-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("job_workers_started", **self.queue.stats())

    def stop(self, grace_s: float) -> None:
        """Let running jobs finish up to `grace_s`, then stop them and record them as failed.

        Jobs still queued stay `queued` in the database and run after the next start.
        """
        leftover = self.queue.close(grace_s)
        self.leases.stop()
        for taken in leftover:
            self.manager.cancel(taken.job_id)
        join_deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, join_deadline - time.monotonic()))
        stuck = self.queue.still_taken()
        if stuck:
            with self.session_factory() as session:
                repository.fail_running(session, reason=SHUTDOWN_REASON, job_ids=stuck)
                notify_finished(session, stuck)
                session.commit()
        log.info("job_workers_stopped", interrupted=len(leftover))

    # ------------------------------------------------------------------ cancel

    def _stop_run(self, job_id: str) -> None:
        """Kill a taken job's run; if it is not inside a container yet, keep trying a while."""
        if not self.manager.cancel(job_id):
            threading.Thread(target=self._keep_cancelling, args=(job_id,), daemon=True).start()

    def _keep_cancelling(self, job_id: str) -> None:
        deadline = time.monotonic() + CANCEL_RETRY_S
        while time.monotonic() < deadline and self.queue.is_taken(job_id):
            if self.manager.cancel(job_id):
                return
            time.sleep(0.05)

    # ------------------------------------------------------------------ one worker

    def _work(self) -> None:
        while (taken := self.queue.take()) is not None:
            run_time_s = None
            try:
                run_time_s = self._run_one(taken)
            except Exception:  # one bad job must not kill the worker
                log.exception("job_worker_error", job_id=taken.job_id)
                self._record_failure_safely(taken.job_id)
            finally:
                self.queue.done(taken, run_time_s)

    def _record_failure_safely(self, job_id: str) -> None:
        """Mark the job failed; if even that fails (the database is down), keep the worker alive:
        the job stays `running` in the database and the next start-up's recovery fails it."""
        try:
            self._record(job_id, failure_values("internal error while running the job"))
        except Exception:
            log.exception("job_failure_not_recorded", job_id=job_id)

    def _run_one(self, taken: TakenJob) -> float | None:
        """Claim, run and record one job; the run's duration, if it ran."""
        with self.session_factory() as session:
            lease_s = self.settings.lease_ttl_s
            if not repository.claim(session, taken.job_id, owner=self.owner, lease_s=lease_s):
                return None  # cancelled while queued, or taken by another node
            session.commit()
            taken.leased = True
            job = repository.get(session, taken.job_id)
        if job is None:
            return None
        self._publish_start(job)
        values = self._execute(job, taken)
        if taken.lease_lost:
            return None  # another node failed it as ours looked dead: store nothing
        if taken.shutting_down:
            values = failure_values(SHUTDOWN_REASON)
        elif taken.cancel_requested:
            values = {**values, "status": JobStatus.CANCELLED.value}
        taken.leased = False  # the commit that stores the result releases the lease
        self._record(taken.job_id, values)
        self._publish_end(taken.job_id)
        if self.metrics is not None:
            self.metrics.observe_run(
                language=job.language,
                mode="async",
                outcome=values["status"],
                duration_s=values.get("execution_time_s"),
            )
        return values.get("execution_time_s")

    def _publish_start(self, job: Job) -> None:
        if self.events is not None:
            self.events.open("job", job.id, output_limit=self.settings.run_output_limit_bytes)
            self.events.publish("job", job.id, "status", {"status": JobStatus.RUNNING.value})

    def _publish_end(self, job_id: str) -> None:
        """The final status and the stored result, as GET /jobs/{id} shows them."""
        if self.events is None:
            return
        with self.session_factory() as session:
            job = repository.get(session, job_id)
            result = JobRead.from_job(job).model_dump(mode="json") if job is not None else None
        if result is not None:
            self.events.publish("job", job_id, "status", {"status": result["status"]})
            self.events.finish("job", job_id, "result", result)

    def _execute(self, job: Job, taken: TakenJob) -> dict[str, Any]:
        request = run_request_for(self.settings, job)
        on_output = None
        if self.events is not None:
            request = replace(request, stream=True)
            on_output = partial(self.events.publish, "job", job.id)
        while True:
            if taken.cancel_requested or taken.shutting_down or taken.lease_lost:
                return failure_values("cancelled before it started") | {
                    "status": JobStatus.CANCELLED.value
                }
            try:
                result = self.manager.run(request, user_id=job.user_id, on_output=on_output)
                return outcome_values(result)
            except PoolExhaustedError:
                # Every container is busy with synchronous runs: a queued job waits its turn.
                time.sleep(EXHAUSTED_BACKOFF_S)
            except AppError as exc:
                return failure_values(exc.message)

    def _record(self, job_id: str, values: dict[str, Any]) -> None:
        """Store the result, and enqueue the job's webhook in the same commit."""
        with self.session_factory() as session:
            if repository.finish(session, job_id, values):
                notify_finished(session, [job_id])
            session.commit()
