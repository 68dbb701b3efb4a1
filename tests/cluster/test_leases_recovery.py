"""Leases on real work rows (jobs, submissions, webhook deliveries) between nodes on one real
PostgreSQL, driven through each node's own WorkLeases / repository calls: a dead node's started
work fails with a reason exactly once and its unstarted work runs elsewhere; a restarting node
touches only its own rows; a node that lost a lease stops its run; a cancel asked through another
node reaches the node running the job. The same code on SQLite is proven once at the end."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import Role, User
from app.core.config import Settings
from app.core.db import create_session_factory, utcnow
from app.core.migrations import upgrade_to_head
from app.jobs import repository
from app.jobs.leasing import WorkLeases, recover_own
from app.jobs.models import Job, JobStatus
from app.jobs.queue import JobQueue, QueuedJob
from app.jobs.shares import InMemoryRunShares
from app.jobs.worker import JOBS
from app.webhooks import repository as deliveries
from app.webhooks.models import Delivery, DeliveryStatus
from app.webhooks.worker import EXPIRED_REASON as DELIVERY_EXPIRED_REASON
from tests.databases import PostgresServer

pytestmark = pytest.mark.postgres

LEASE_S = 30.0


@pytest.fixture
def db_engine(postgres_server: PostgresServer, postgres_template: str) -> Iterator[Engine]:
    url = postgres_server.create("warmbox_leases", template_url=postgres_template)
    engine = create_engine(url)
    yield engine
    engine.dispose()
    postgres_server.drop(url)


@pytest.fixture
def factory(db_engine: Engine) -> sessionmaker[Session]:
    return create_session_factory(db_engine)


def add_user(factory: sessionmaker[Session]) -> str:
    with factory() as session:
        user = User(username="owner", username_key="owner", password_hash="x", role=Role.USER)
        session.add(user)
        session.commit()
        return user.id


def add_jobs(
    factory: sessionmaker[Session],
    user_id: str,
    count: int,
    *,
    status: JobStatus,
    owner: str | None = None,
    expires_in_s: float = LEASE_S,
) -> list[str]:
    """`count` jobs in `status`, leased to `owner` (None: nobody) until `expires_in_s` from now."""
    now = utcnow()
    with factory() as session:
        jobs = [
            Job(
                user_id=user_id,
                language="bash",
                code=f"echo {n}",
                timeout_s=5,
                status=status.value,
                created_at=now + timedelta(milliseconds=n),
                started_at=now if status is JobStatus.RUNNING else None,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=expires_in_s) if owner else None,
            )
            for n in range(count)
        ]
        session.add_all(jobs)
        session.commit()
        return [job.id for job in jobs]


def states(factory: sessionmaker[Session], ids: list[str]) -> dict[str, tuple[Any, ...]]:
    with factory() as session:
        rows = session.execute(
            select(Job.id, Job.status, Job.stderr, Job.lease_owner).where(Job.id.in_(ids))
        )
        return {row[0]: tuple(row[1:]) for row in rows}


def node(factory: sessionmaker[Session], owner: str, *, workers: int = 50) -> WorkLeases:
    queue = JobQueue(capacity=1000, per_user=0, workers=workers, shares=InMemoryRunShares(0))
    return WorkLeases(
        kind=JOBS,
        queue=queue,
        session_factory=factory,
        owner=owner,
        lease_s=LEASE_S,
        renew_interval_s=LEASE_S / 3,
        poll_interval_s=0.1,
    )


def test_a_dead_nodes_started_jobs_fail_and_its_queued_jobs_run_elsewhere(
    factory: sessionmaker[Session],
) -> None:
    user = add_user(factory)
    dead_running = add_jobs(
        factory, user, 3, status=JobStatus.RUNNING, owner="dead", expires_in_s=-1
    )
    dead_queued = add_jobs(factory, user, 3, status=JobStatus.QUEUED, owner="dead", expires_in_s=-1)
    live_running = add_jobs(factory, user, 2, status=JobStatus.RUNNING, owner="alive")
    live_queued = add_jobs(factory, user, 2, status=JobStatus.QUEUED, owner="alive")
    free_queued = add_jobs(factory, user, 2, status=JobStatus.QUEUED)

    rescuer = node(factory, "rescuer")
    rescuer.tick()

    after = states(factory, dead_running + dead_queued + live_running + live_queued + free_queued)
    for job_id in dead_running:
        assert after[job_id] == ("failed", repository.EXPIRED_REASON, None)
    for job_id in dead_queued + free_queued:  # not started: queued again, now on the rescuer
        assert after[job_id] == ("queued", None, "rescuer")
    for job_id in live_running:
        assert after[job_id] == ("running", None, "alive")
    for job_id in live_queued:
        assert after[job_id] == ("queued", None, "alive")
    indexed, _running = rescuer.queue.held_ids()
    assert sorted(indexed) == sorted(dead_queued + free_queued)
    # The rescuer's worker may start them; the live node's queued jobs it may not.
    with factory.begin() as session:
        assert repository.claim(session, dead_queued[0], owner="rescuer", lease_s=LEASE_S)
        assert not repository.claim(session, live_queued[0], owner="rescuer", lease_s=LEASE_S)


def test_two_nodes_recovering_at_once_fail_each_job_exactly_once(
    factory: sessionmaker[Session],
) -> None:
    user = add_user(factory)
    expired = add_jobs(factory, user, 60, status=JobStatus.RUNNING, owner="dead", expires_in_s=-1)
    nodes = [node(factory, f"node{n}") for n in range(3)]
    failed: dict[str, list[str]] = {}
    barrier = threading.Barrier(len(nodes))

    def recover(leases: WorkLeases) -> None:
        barrier.wait()
        failed[leases.owner] = [job for _ in range(3) for job in leases.recover_expired()]

    threads = [threading.Thread(target=recover, args=(leases,)) for leases in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    every = [job_id for ids in failed.values() for job_id in ids]
    assert sorted(every) == sorted(expired)  # each failed once, by exactly one node
    assert {status for status, _, _ in states(factory, expired).values()} == {"failed"}


def test_a_restarting_node_touches_only_its_own_work(factory: sessionmaker[Session]) -> None:
    user = add_user(factory)
    own_running = add_jobs(factory, user, 2, status=JobStatus.RUNNING, owner="node1")
    own_queued = add_jobs(factory, user, 2, status=JobStatus.QUEUED, owner="node1")
    other_running = add_jobs(factory, user, 2, status=JobStatus.RUNNING, owner="node2")
    other_queued = add_jobs(factory, user, 2, status=JobStatus.QUEUED, owner="node2")

    failed, queued = recover_own(factory, JOBS, "node1")

    assert sorted(failed) == sorted(own_running)
    after = states(factory, own_running + own_queued + other_running + other_queued)
    for job_id in own_running:
        assert after[job_id] == ("failed", repository.RESTART_REASON, None)
    for job_id in own_queued:
        assert after[job_id] == ("queued", None, None)  # free again for whoever has room
    for job_id in other_running:
        assert after[job_id] == ("running", None, "node2")
    for job_id in other_queued:
        assert after[job_id] == ("queued", None, "node2")
    assert [job.job_id for job in queued] == own_queued  # indexed; node2's queued are node2's


def test_a_node_whose_lease_was_taken_over_stops_its_run(factory: sessionmaker[Session]) -> None:
    user = add_user(factory)
    (job_id,) = add_jobs(factory, user, 1, status=JobStatus.QUEUED)
    slow = node(factory, "slow")
    slow.queue.requeue(repository_rows(factory, [job_id]))
    taken = slow.queue.take()
    assert taken is not None
    with factory.begin() as session:
        assert repository.claim(session, job_id, owner="slow", lease_s=0.5)
    taken.leased = True
    stopped: list[str] = []
    slow.queue.on_cancel(stopped.append)

    with factory.begin() as session:  # "slow" paused past its lease: another node took over
        session.execute(
            Job.__table__.update()
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert node(factory, "rescuer").recover_expired() == [job_id]
    slow.renew()
    assert not taken.lease_lost  # once missing may be a result stored a moment ago
    slow.renew()

    assert taken.lease_lost
    assert stopped == [job_id]
    with factory.begin() as session:  # the late result is not stored over the failure
        assert not repository.finish(session, job_id, {"status": "succeeded", "stdout": "late"})
    assert states(factory, [job_id])[job_id] == ("failed", repository.EXPIRED_REASON, None)


def test_a_cancel_asked_through_another_node_stops_the_run(factory: sessionmaker[Session]) -> None:
    user = add_user(factory)
    (job_id,) = add_jobs(factory, user, 1, status=JobStatus.QUEUED)
    runner = node(factory, "runner")
    runner.queue.requeue(repository_rows(factory, [job_id]))
    taken = runner.queue.take()
    assert taken is not None
    with factory.begin() as session:
        assert repository.claim(session, job_id, owner="runner", lease_s=LEASE_S)
    taken.leased = True
    stopped: list[str] = []
    runner.queue.on_cancel(stopped.append)

    with factory.begin() as session:  # what POST /jobs/{id}/cancel on another node writes
        assert repository.request_cancel_running(session, job_id)
    runner.tick()

    assert taken.cancel_requested
    assert stopped == [job_id]


def test_a_dead_nodes_webhook_attempt_counts_as_failed_and_is_retried(
    factory: sessionmaker[Session],
) -> None:
    now = utcnow()
    with factory.begin() as session:
        delivery = Delivery(
            resource="job",
            resource_id="j1",
            event="job.finished",
            url="http://127.0.0.1:9/",
            payload="{}",
            next_attempt_at=now,
        )
        session.add(delivery)
        session.flush()
        delivery_id = delivery.id
        (claimed,) = deliveries.claim_due(session, now=now, limit=5, owner="dead", lease_s=0.5)
        assert claimed.id == delivery_id
        assert deliveries.claim_due(session, now=now, limit=5, owner="other", lease_s=5) == []
    later = now + timedelta(seconds=1)
    with factory.begin() as session:
        (taken,) = deliveries.take_over_expired(
            session, now=later, limit=5, owner="rescuer", lease_s=5
        )
        values = {
            "status": DeliveryStatus.PENDING.value,
            "last_error": DELIVERY_EXPIRED_REASON,
            "next_attempt_at": later,
        }
        assert deliveries.record_attempt(session, taken.id, values, owner="rescuer")
    with factory.begin() as session:  # the dead node's attempt, answered late, is not stored
        assert not deliveries.record_attempt(session, delivery_id, {}, owner="dead")
        row = session.get(Delivery, delivery_id)
        assert row is not None
        assert (row.status, row.attempts, row.last_error, row.lease_owner) == (
            "pending",
            1,
            DELIVERY_EXPIRED_REASON,
            None,
        )


def repository_rows(factory: sessionmaker[Session], job_ids: list[str]) -> list[QueuedJob]:
    with factory() as session:
        return [QueuedJob(*row) for row in repository.queued_jobs(session, job_ids)]


def test_one_node_on_sqlite_takes_the_same_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'one.db'}"
    upgrade_to_head(url)
    engine = create_engine(url)
    factory = create_session_factory(engine)
    try:
        user = add_user(factory)
        left = add_jobs(factory, user, 2, status=JobStatus.RUNNING)  # before leases existed
        queued = add_jobs(factory, user, 3, status=JobStatus.QUEUED)
        failed, indexed = recover_own(factory, JOBS, "host")
        assert sorted(failed) == sorted(left)
        assert [job.job_id for job in indexed] == queued
        single = node(factory, "host", workers=2)
        single.queue.requeue(indexed)
        single.tick()  # its index already holds them all: nothing more to claim
        assert sorted(single.queue.held_ids()[0]) == sorted(queued)
        with factory.begin() as session:
            assert repository.claim(session, queued[0], owner="host", lease_s=LEASE_S)
            assert repository.finish(session, queued[0], {"status": "succeeded"})
        assert states(factory, queued[:1])[queued[0]] == ("succeeded", None, None)
    finally:
        engine.dispose()


def test_a_renewal_interval_over_half_the_lease_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="LEASE_RENEW_INTERVAL_S"):
        Settings(_env_file=None, data_dir=tmp_path, lease_ttl_s=10, lease_renew_interval_s=6)  # type: ignore[call-arg]
    Settings(_env_file=None, data_dir=tmp_path, lease_ttl_s=10, lease_renew_interval_s=5)  # type: ignore[call-arg]
