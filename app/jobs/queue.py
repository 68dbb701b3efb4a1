"""JobQueue: the in-memory index of queued jobs that the job workers take from, fair between users.

The database is the truth and this queue only an index into it: a job enters once it is committed
as `queued`, and a restart rebuilds the queue from the database. Like arq's `jobs.py`, this module
knows nothing of who runs the jobs: the service puts jobs in and asks for cancels, the workers
(`app/jobs/worker.py`) take jobs out; neither imports the other.

Fairness: users with queued work take turns (round robin), so one user's hundred queued jobs
delay another user's first job by at most one job per worker. A user who already holds their
share of runs (`RunShares`) is skipped until one of their runs ends, so their queued jobs wait
for their own share instead of holding a worker that could serve someone else.

Several nodes (issue 14): each node's queue indexes the jobs it accepted plus those it claimed
from the database when it had room (`room`, `requeue`; see `app/jobs/leasing.py`). A job may sit
in two nodes' queues; the database decides who runs it (the worker's conditional claim), and the
loser drops it when its turn comes.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.core.errors import PoolExhaustedError, QuotaExceededError, ServiceUnavailableError
from app.jobs.shares import RunShares, ShareTicket
from app.sandbox.stats import LatencyWindow

CancelHandler = Callable[[str], None]


@dataclass(frozen=True)
class QueuedJob:
    job_id: str
    user_id: str
    timeout_s: float


@dataclass
class QueuePlace:
    """A place reserved in the queue while the job is written; set `job` once it is committed."""

    user_id: str
    job: QueuedJob | None = None


@dataclass
class TakenJob:
    """A job a worker has taken, with its user's share held; cancel and shutdown set the flags."""

    job_id: str
    ticket: ShareTicket = field(repr=False)
    cancel_requested: bool = False
    shutting_down: bool = False
    leased: bool = False  # the worker's claim committed: this node holds the job's lease
    lease_lost: bool = False  # another node took the job over (this node looked dead)


class JobQueue:
    """Bounded queue of jobs, served round robin between users within their run shares.

    Args:
        capacity: queued jobs in all (JOB_QUEUE_MAX).
        per_user: queued jobs per user (JOB_QUEUE_MAX_PER_USER, 0 = no per-user bound).
        workers: how many workers take from it (for the wait estimate).
        shares: the per-user run shares a taken job counts against.
    """

    def __init__(self, *, capacity: int, per_user: int, workers: int, shares: RunShares) -> None:
        self.capacity = capacity
        self.per_user = per_user
        self.workers = workers
        self.shares = shares
        self._cond = threading.Condition()
        self._pending: dict[str, deque[QueuedJob]] = {}  # per user, oldest first
        self._pending_ids: set[str] = set()
        self._turns: deque[str] = deque()  # users with queued jobs, next turn first
        self._reserved: dict[str, int] = {}
        self._taken: dict[str, TakenJob] = {}
        self._accepting = True
        self._closed = False
        self._run_times = LatencyWindow(size=200)
        self._cancel_handler: CancelHandler | None = None
        self._room_handler: Callable[[], None] | None = None
        shares.on_release(self._wake)

    # ------------------------------------------------------------------ producers

    def requeue(self, jobs: list[QueuedJob]) -> int:
        """Put back what a restart found queued or what this node claimed, oldest first; may
        exceed every bound (those jobs were acknowledged). A job already here is not added
        twice. How many were added."""
        with self._cond:
            added = sum(self._append_locked(job) for job in jobs)
            self._cond.notify_all()
            return added

    @contextmanager
    def reserve(self, user_id: str, *, share_exempt: bool = False) -> Iterator[QueuePlace]:
        """Hold a queue place while the job is written; the job is queued when the block ends.

        Raises:
            ServiceUnavailableError: the service is shutting down.
            QuotaExceededError: the user already has `per_user` jobs queued (unless exempt).
            PoolExhaustedError: the whole queue is full (503 with Retry-After).
        """
        with self._cond:
            self._refuse_locked(user_id, share_exempt=share_exempt)
            self._reserved[user_id] = self._reserved.get(user_id, 0) + 1
        place = QueuePlace(user_id)
        try:
            yield place
        finally:
            with self._cond:
                self._reserved[user_id] -= 1
                if not self._reserved[user_id]:
                    del self._reserved[user_id]
                if place.job is not None:
                    self._append_locked(place.job)
                    self._cond.notify_all()

    def _refuse_locked(self, user_id: str, *, share_exempt: bool) -> None:
        if not self._accepting:
            raise ServiceUnavailableError(
                "the service is shutting down; retry shortly", headers={"Retry-After": "5"}
            )
        queued = len(self._pending.get(user_id, ())) + self._reserved.get(user_id, 0)
        if self.per_user and not share_exempt and queued >= self.per_user:
            raise QuotaExceededError(
                f"you already have {queued} jobs queued (at most {self.per_user}); "
                "retry when one of them has started",
                retry_after_s=math.ceil(self._average_run_s()) or 1,
                details={"queued": queued, "max_queued_per_user": self.per_user},
            )
        depth = self._depth_locked() + sum(self._reserved.values())
        if depth >= self.capacity:
            raise PoolExhaustedError(
                "the job queue is full; retry later",
                retry_after_s=round(self._expected_wait_locked()) or 1,
                details={"queue_depth": self._depth_locked(), "capacity": self.capacity},
            )

    def _append_locked(self, job: QueuedJob) -> bool:
        """Index the job unless it is here already (this node may have claimed a job it had
        just accepted, between its commit and the end of `reserve`)."""
        if job.job_id in self._pending_ids or job.job_id in self._taken:
            return False
        if job.user_id not in self._pending:
            self._pending[job.user_id] = deque()
            self._turns.append(job.user_id)
        self._pending[job.user_id].append(job)
        self._pending_ids.add(job.job_id)
        return True

    def cancel(self, job_id: str) -> None:
        """Drop a queued job, or flag a taken one and ask the workers to stop its run."""
        with self._cond:
            if self._drop_queued_locked(job_id):
                return
            taken = self._taken.get(job_id)
            if taken is None or taken.cancel_requested:
                return  # not here, or already being stopped
            taken.cancel_requested = True
            handler = self._cancel_handler
        if handler is not None:
            handler(job_id)

    def _drop_queued_locked(self, job_id: str) -> bool:
        if job_id not in self._pending_ids:
            return False
        for user_id, jobs in self._pending.items():
            for job in jobs:
                if job.job_id == job_id:
                    jobs.remove(job)
                    self._pending_ids.discard(job_id)
                    if not jobs:
                        self._forget_user_locked(user_id)
                    return True
        return False

    def _forget_user_locked(self, user_id: str) -> None:
        del self._pending[user_id]
        self._turns.remove(user_id)

    # ------------------------------------------------------------------ consumers

    def on_cancel(self, handler: CancelHandler) -> None:
        """Called (outside the lock) with the id of every taken job a caller cancels."""
        self._cancel_handler = handler

    def take(self) -> TakenJob | None:
        """Block until some user with queued work has room in their share; take their oldest job
        and hold that share. None once the queue is closed."""
        with self._cond:
            while not self._closed:
                taken = self._take_next_turn_locked()
                if taken is not None:
                    self._taken[taken.job_id] = taken
                    return taken
                self._cond.wait()
            return None

    def _take_next_turn_locked(self) -> TakenJob | None:
        for _ in range(len(self._turns)):
            user_id = self._turns[0]
            self._turns.rotate(-1)  # this user's turn is used, whether or not they can run
            job = self._pending[user_id][0]
            ticket = self.shares.try_acquire(user_id, run_timeout_s=job.timeout_s)
            if ticket is None:
                continue  # the user's share is full; their jobs wait for their own runs
            self._pending_ids.discard(self._pending[user_id].popleft().job_id)
            if not self._pending[user_id]:
                self._forget_user_locked(user_id)
            return TakenJob(job.job_id, ticket)
        return None

    def done(self, taken: TakenJob, run_time_s: float | None = None) -> None:
        """The worker has finished with the job: forget it and release its user's share."""
        with self._cond:
            self._taken.pop(taken.job_id, None)
            if run_time_s is not None:
                self._run_times.add(run_time_s * 1000)
            self._cond.notify_all()
            handler = self._room_handler
        self.shares.release(taken.ticket)
        if handler is not None:
            handler()

    # ------------------------------------------------------------------ leases

    def on_room(self, handler: Callable[[], None]) -> None:
        """Called (outside the lock) whenever a worker is done: this node may claim more."""
        self._room_handler = handler

    def room(self) -> int:
        """How many more jobs this node's workers could start now: what it may claim."""
        with self._cond:
            if self._closed:
                return 0
            return max(0, self.workers - self._depth_locked() - len(self._taken))

    def held_ids(self) -> tuple[list[str], list[str]]:
        """(queued here, running here with their lease): the leases this node renews."""
        with self._cond:
            pending = list(self._pending_ids)
            return pending, [job_id for job_id, t in self._taken.items() if t.leased]

    def lease_lost(self, job_ids: set[str]) -> None:
        """Another node took these running jobs over: stop their runs, store nothing."""
        with self._cond:
            lost = [
                taken
                for job_id in job_ids
                if (taken := self._taken.get(job_id)) is not None and not taken.lease_lost
            ]
            for taken in lost:
                taken.lease_lost = True
                taken.cancel_requested = True  # what a worker checks between steps
            handler = self._cancel_handler
        if handler is not None:
            for taken in lost:
                handler(taken.job_id)

    def _wake(self, _user_id: str) -> None:
        """A share was released (here or by a synchronous run): a waiting user may now run."""
        with self._cond:
            self._cond.notify_all()

    def is_taken(self, job_id: str) -> bool:
        with self._cond:
            return job_id in self._taken

    # ------------------------------------------------------------------ shutdown

    def close(self, grace_s: float) -> list[TakenJob]:
        """Stop accepting and taking; wait up to `grace_s` for taken jobs to be done, then flag
        and return those still taken. Queued jobs stay queued in the database."""
        deadline = time.monotonic() + grace_s
        with self._cond:
            self._accepting = False
            self._closed = True
            self._cond.notify_all()
            while self._taken and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            leftover = list(self._taken.values())
            for taken in leftover:
                taken.shutting_down = True
            return leftover

    def still_taken(self) -> list[str]:
        with self._cond:
            return list(self._taken)

    # ------------------------------------------------------------------ observation

    def _depth_locked(self) -> int:
        return sum(len(jobs) for jobs in self._pending.values())

    def _average_run_s(self) -> float:
        summary = self._run_times.summary()
        return float(summary["avg_ms"]) / 1000 if summary["count"] else 0.0

    def _expected_wait_locked(self) -> float:
        waiting = self._depth_locked() + len(self._taken)
        return round(self._average_run_s() * waiting / self.workers, 3)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "depth": self._depth_locked(),
                "capacity": self.capacity,
                "workers": self.workers,
                "running": len(self._taken),
                "users_waiting": len(self._turns),
                "accepting": self._accepting,
                "expected_wait": self._expected_wait_locked(),
            }
