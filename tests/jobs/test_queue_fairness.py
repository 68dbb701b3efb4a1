"""The JobQueue on its own (real threads, no Docker): users take turns, a user at their run
share is skipped until one of their runs ends, and per-user and total bounds refuse cleanly."""

from __future__ import annotations

import threading

import pytest

from app.core.errors import PoolExhaustedError, QuotaExceededError
from app.jobs.queue import JobQueue, QueuedJob, TakenJob
from app.jobs.shares import InMemoryRunShares


def make_queue(*, share: int = 1, per_user: int = 0, capacity: int = 100) -> JobQueue:
    shares = InMemoryRunShares(share)
    return JobQueue(capacity=capacity, per_user=per_user, workers=2, shares=shares)


def submit(queue: JobQueue, user_id: str, job_id: str, *, exempt: bool = False) -> None:
    with queue.reserve(user_id, share_exempt=exempt) as place:
        place.job = QueuedJob(job_id, user_id, timeout_s=5.0)


def take_and_finish(queue: JobQueue) -> str:
    taken = queue.take()
    assert taken is not None
    queue.done(taken)
    return taken.job_id


def test_users_take_turns_so_one_users_backlog_does_not_delay_anothers_first_job() -> None:
    queue = make_queue(capacity=200)
    for number in range(100):
        submit(queue, "alice", f"a{number}")
    submit(queue, "bob", "b0")
    submit(queue, "bob", "b1")

    order = [take_and_finish(queue) for _ in range(6)]

    assert order == ["a0", "b0", "a1", "b1", "a2", "a3"]


def test_a_user_at_their_share_is_skipped_and_served_when_a_run_ends() -> None:
    queue = make_queue(share=1)
    submit(queue, "alice", "a0")
    submit(queue, "alice", "a1")
    submit(queue, "bob", "b0")
    first = queue.take()
    assert first is not None
    assert first.job_id == "a0"

    second = queue.take()  # alice holds her one run: bob goes next although a1 is older

    assert second is not None
    assert second.job_id == "b0"
    taken: list[TakenJob] = []
    waiter = threading.Thread(target=lambda: taken.append(queue.take()))  # type: ignore[arg-type]
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # a1 waits for alice's own share, not for a worker
    queue.done(first)
    waiter.join(2.0)
    assert [job.job_id for job in taken] == ["a1"]


def test_a_synchronous_run_counts_against_the_share_and_its_end_wakes_the_queue() -> None:
    shares = InMemoryRunShares(1)
    queue = JobQueue(capacity=10, per_user=0, workers=1, shares=shares)
    sync_run = shares.try_acquire("alice", run_timeout_s=5.0)
    assert sync_run is not None
    submit(queue, "alice", "a0")
    taken: list[TakenJob] = []
    waiter = threading.Thread(target=lambda: taken.append(queue.take()))  # type: ignore[arg-type]
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()

    shares.release(sync_run)

    waiter.join(2.0)
    assert [job.job_id for job in taken] == ["a0"]
    assert shares.running("alice") == 1


def test_the_per_user_bound_refuses_with_retry_after_and_admins_are_exempt() -> None:
    queue = make_queue(per_user=2)
    submit(queue, "alice", "a0")
    submit(queue, "alice", "a1")

    with pytest.raises(QuotaExceededError) as refused:
        submit(queue, "alice", "a2")

    assert int(refused.value.headers["Retry-After"]) >= 1
    assert refused.value.details == {"queued": 2, "max_queued_per_user": 2}
    submit(queue, "bob", "b0")  # another user still has room
    submit(queue, "root", "r0", exempt=True)
    submit(queue, "root", "r1", exempt=True)
    submit(queue, "root", "r2", exempt=True)
    assert queue.stats()["depth"] == 6


def test_a_refused_reservation_queues_nothing_and_the_total_bound_still_holds() -> None:
    queue = make_queue(per_user=0, capacity=2)
    submit(queue, "alice", "a0")
    with queue.reserve("bob"):
        pass  # the job was never committed: nothing is queued

    submit(queue, "bob", "b0")

    with pytest.raises(PoolExhaustedError):
        submit(queue, "carol", "c0")
    assert queue.stats()["depth"] == 2


def test_a_cancelled_queued_job_leaves_the_queue_and_frees_its_users_place() -> None:
    queue = make_queue(per_user=1)
    submit(queue, "alice", "a0")

    queue.cancel("a0")

    assert queue.stats()["depth"] == 0
    assert queue.stats()["users_waiting"] == 0
    submit(queue, "alice", "a1")


def test_recovered_jobs_keep_their_order_per_user_and_may_exceed_the_bounds() -> None:
    queue = make_queue(per_user=1, capacity=1)
    queue.requeue(
        [QueuedJob(f"a{n}", "alice", 5.0) for n in range(3)] + [QueuedJob("b0", "bob", 5.0)]
    )

    order = [take_and_finish(queue) for _ in range(4)]

    assert order == ["a0", "b0", "a1", "a2"]


def test_done_releases_the_share_once_even_if_called_twice() -> None:
    shares = InMemoryRunShares(1)
    queue = JobQueue(capacity=10, per_user=0, workers=1, shares=shares)
    submit(queue, "alice", "a0")
    taken = queue.take()
    assert taken is not None
    assert shares.running("alice") == 1

    queue.done(taken)
    queue.done(taken)

    assert shares.running("alice") == 0
