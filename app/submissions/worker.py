"""SubmissionWorkerPool: the threads that take queued submissions and grade them on the pool.

Built like `app/jobs/worker.py`, on its own `JobQueue` instance (round robin between users, each
taken submission holding one of its user's run shares while its cases run one after another), so
jobs and submissions share the per-user counters without sharing a queue. A submission's cases
are graded in one container lease (app/submissions/grader.py). Two things keep a burst of grading
from starving interactive use: fewer workers than a language pool has containers, and before
every lease a wait until the pool keeps SUBMISSION_SYNC_RESERVE containers free besides it (a
container busy with its reset counts as taken), so a synchronous run finds a warm one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.jobs.extras import load_args, load_files
from app.jobs.leasing import LeasedKind, WorkLeases, recover_own
from app.jobs.queue import JobQueue, QueuedJob, TakenJob
from app.submissions import callbacks, repository
from app.submissions.callbacks import RESOURCE
from app.submissions.grader import Case, CaseOutcome, Grader, Grading, Program
from app.submissions.models import CompareMode, Submission, SubmissionCase, SubmissionStatus

if TYPE_CHECKING:
    from app.events.log import EventLog
    from app.sandbox.manager import SandboxManager

log = structlog.get_logger(__name__)

SHUTDOWN_REASON = "the service stopped before the submission was graded"
JOIN_TIMEOUT_S = 3.0
CANCEL_RETRY_S = 5.0
ROOM_POLL_S = 0.005


def _describe(session: Session, ids: list[str]) -> list[QueuedJob]:
    return [QueuedJob(*row) for row in repository.queued(session, ids)]


def _fail(session: Session, ids: list[str], reason: str) -> list[str]:
    failed = repository.fail_started(session, ids, reason)
    callbacks.notify_finished(session, failed)  # its webhook goes out in the same commit
    return failed


SUBMISSIONS = LeasedKind(
    name="submission",
    table=repository.TABLE,
    queued=repository.QUEUED,
    started=repository.STARTED,
    order_by=repository.CLAIM_ORDER,
    describe=_describe,
    fail=_fail,
    expired_reason=repository.EXPIRED_REASON,
    restart_reason=repository.RESTART_REASON,
)


def recover(session_factory: sessionmaker[Session], owner: str) -> list[QueuedJob]:
    """Fail the submissions this node left running; return the queued ones to index (this
    node's and those no node holds)."""
    _failed, queued = recover_own(session_factory, SUBMISSIONS, owner)
    return queued


def program_of(settings: Settings, submission: Submission) -> Program:
    return Program(
        submission_id=submission.id,
        user_id=submission.user_id,
        language=submission.language,
        code=submission.code,
        files=load_files(submission.files),
        compare=CompareMode(submission.compare),
        abs_tol=submission.abs_tol,
        rel_tol=submission.rel_tol,
        memory_mb=submission.memory_mb,
        output_limit_bytes=settings.run_output_limit_bytes,
        stored_output_bytes=settings.submission_stored_output_bytes,
    )


def case_of(row: SubmissionCase) -> Case:
    return Case(row.number, row.stdin, row.expected_output, load_args(row.args), row.timeout_s)


def final_values(grading: Grading, taken: TakenJob) -> dict[str, Any]:
    """The submission's columns once grading has ended (or stopped)."""
    compiled = grading.compile
    values: dict[str, Any] = {
        "passed": grading.passed,
        "compile_output": compiled.output if compiled else None,
        "compile_exit_code": compiled.exit_code if compiled else None,
        "compile_time_s": compiled.duration_s if compiled else None,
    }
    if taken.shutting_down:
        return values | {"status": SubmissionStatus.FAILED.value, "error": SHUTDOWN_REASON}
    if grading.cancelled or taken.cancel_requested:
        return values | {"status": SubmissionStatus.CANCELLED.value}
    return values | {"status": SubmissionStatus.FINISHED.value, "verdict": grading.verdict().value}


class SubmissionWorkerPool:
    """`settings.effective_submission_workers` threads grading from a JobQueue of submissions."""

    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        manager: SandboxManager,
        queue: JobQueue,
        events: EventLog | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.manager = manager
        self.queue = queue
        self.events = events  # followers of a submission (SSE) see each case as it is graded
        self.owner = settings.effective_node_id
        self._threads: list[threading.Thread] = []
        queue.on_cancel(self._stop_run)
        self.leases = WorkLeases(
            kind=SUBMISSIONS,
            queue=queue,
            session_factory=session_factory,
            owner=self.owner,
            lease_s=settings.lease_ttl_s,
            renew_interval_s=settings.lease_renew_interval_s,
            poll_interval_s=settings.work_poll_interval_s,
            on_failed=lambda ids: [self._publish_end(submission_id) for submission_id in ids],
        )

    def start(self) -> None:
        self.leases.start()
        for number in range(self.queue.workers):
            thread = threading.Thread(
                target=self._work, name=f"submission-worker-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.info("submission_workers_started", **self.queue.stats())

    def stop(self, grace_s: float) -> None:
        """Let grading finish up to `grace_s`, then stop it and record it as failed; queued
        submissions stay queued for the next start."""
        leftover = self.queue.close(grace_s)
        self.leases.stop()
        for taken in leftover:
            self.manager.cancel(taken.job_id)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = self.queue.still_taken()
        if stuck:
            with self.session_factory() as session:
                repository.fail_running(session, reason=SHUTDOWN_REASON, ids=stuck)
                callbacks.notify_finished(session, stuck)
                session.commit()
        log.info("submission_workers_stopped", interrupted=len(leftover))

    def _stop_run(self, submission_id: str) -> None:
        """Kill the running case; between two cases the grader sees the flag and stops."""
        if not self.manager.cancel(submission_id):
            threading.Thread(
                target=self._keep_cancelling, args=(submission_id,), daemon=True
            ).start()

    def _keep_cancelling(self, submission_id: str) -> None:
        deadline = time.monotonic() + CANCEL_RETRY_S
        while time.monotonic() < deadline and self.queue.is_taken(submission_id):
            if self.manager.cancel(submission_id):
                return
            time.sleep(0.05)

    def _work(self) -> None:
        while (taken := self.queue.take()) is not None:
            started = time.monotonic()
            try:
                self._grade_one(taken)
            except Exception:  # one bad submission must not kill the worker
                log.exception("submission_worker_error", submission_id=taken.job_id)
                self._fail_safely(taken.job_id)
            finally:
                self.queue.done(taken, time.monotonic() - started)

    def _claim(self, session: Session, taken: TakenJob) -> bool:
        """queued -> running with this node's lease, committed; False when it is not ours."""
        lease_s = self.settings.lease_ttl_s
        if not repository.claim(session, taken.job_id, owner=self.owner, lease_s=lease_s):
            return False
        session.commit()
        taken.leased = True
        return True

    def _fail_safely(self, submission_id: str) -> None:
        try:
            with self.session_factory() as session:
                if repository.finish(
                    session,
                    submission_id,
                    {"status": SubmissionStatus.FAILED.value, "error": "internal error"},
                ):
                    callbacks.notify_finished(session, [submission_id])
                session.commit()
        except Exception:  # the database is down: the next start-up's recovery fails it
            log.exception("submission_failure_not_recorded", submission_id=submission_id)

    def _grade_one(self, taken: TakenJob) -> None:
        with self.session_factory() as session:
            if not self._claim(session, taken):
                return  # cancelled while queued, or taken by another node
            session.commit()
            submission = repository.get(session, taken.job_id)
            assert submission is not None
            program = program_of(self.settings, submission)
            cases = [case_of(row) for row in repository.cases_of(session, submission.id)]
        stop = lambda: taken.cancel_requested or taken.shutting_down  # noqa: E731
        grader = Grader(
            self.manager.grade,
            should_stop=stop,
            wait_for_room=lambda language: self._wait_for_room(language, stop),
        )
        self._publish_start(taken.job_id)
        grading = grader.grade(program, cases, on_case=partial(self._publish_case, taken.job_id))
        self._finish(taken, final_values(grading, taken), grading.outcomes)
        self._publish_end(taken.job_id)

    def _publish_start(self, submission_id: str) -> None:
        if self.events is not None:
            limit = self.settings.run_output_limit_bytes
            self.events.open(RESOURCE, submission_id, output_limit=limit)
            self.events.publish(
                RESOURCE, submission_id, "status", {"status": SubmissionStatus.RUNNING.value}
            )

    def _publish_case(self, submission_id: str, outcome: CaseOutcome) -> None:
        if self.events is not None:
            event = {"number": outcome.number, **case_values(outcome)}
            self.events.publish(RESOURCE, submission_id, "case", event)

    def _publish_end(self, submission_id: str) -> None:
        """After the commit: the final status and the submission as GET shows it."""
        if self.events is None:
            return
        with self.session_factory() as session:
            submission = repository.get(session, submission_id)
            if submission is None:
                return
            result = callbacks.submission_payload(session, submission)
        self.events.publish(RESOURCE, submission_id, "status", {"status": result["status"]})
        self.events.finish(RESOURCE, submission_id, "result", result)

    def _wait_for_room(self, language: str, stop: Callable[[], bool]) -> None:
        """Start a lease only while the language's pool keeps SUBMISSION_SYNC_RESERVE containers
        free (idle, or room to start one) besides it: a burst of grading then never makes a
        synchronous run wait for a container's reset."""
        reserve = self.settings.submission_sync_reserve
        pool = self.manager.pools.get(language)
        if not reserve or pool is None:
            return  # no reserve asked for, or no pool yet: the run itself reports that
        reserve = min(reserve, pool.max_size - 1)
        while pool.spare() <= reserve and not stop():
            time.sleep(ROOM_POLL_S)

    def _finish(self, taken: TakenJob, values: dict[str, Any], outcomes: list[CaseOutcome]) -> None:
        """Every case's result (one executemany) and the verdict in one commit: one fsync per
        submission, not one per case, the cost that matters in a burst."""
        rows = [{"number": outcome.number, **case_values(outcome)} for outcome in outcomes]
        with self.session_factory() as session:
            if repository.finish_with_cases(session, taken.job_id, values, rows):
                notify_finished(session, taken.job_id)
            session.commit()


def case_values(outcome: CaseOutcome) -> dict[str, Any]:
    return {
        "verdict": outcome.verdict.value,
        "time_ms": outcome.time_ms,
        "memory_kb": outcome.memory_kb,
        "exit_code": outcome.exit_code,
        "stdout": outcome.stdout,
        "stderr": outcome.stderr,
        "truncated": outcome.truncated,
    }


def notify_finished(session: Session, submission_id: str) -> None:
    """The one place the grader finishes a submission, inside the transaction that finishes it:
    its webhook delivery is enqueued there (see app/submissions/callbacks.py)."""
    callbacks.notify_finished(session, [submission_id])
