"""WorkLeases: one node's side of the leases on one kind of queued work (jobs, submissions).

The database is the queue that all nodes share; a node's `JobQueue` is only its index of what it
may run. One thread per kind, every WORK_POLL_INTERVAL_S (and whenever a worker is done):

- **claims** as many queued rows that no live lease holds as its workers have room for (oldest
  first, `FOR UPDATE SKIP LOCKED` on PostgreSQL) and indexes them: work accepted by a busy or dead
  node is run by whichever node has room;
- **recovers** started rows whose lease expired (their node died): failed with a reason, never run
  again, in the transaction that takes them over, so two recovering nodes cannot both act;
- **renews** every LEASE_RENEW_INTERVAL_S the leases of what it holds; a running row whose lease
  another node took over (this node was paused past the TTL) has its run stopped and nothing of it
  is stored;
- **follows cancels** asked through another node (the row's `cancel_requested`).

A queued row whose node died is simply claimable again once its lease expires: it runs once, on
the node that claims it. The worker's own claim (queued -> running, with the lease) is conditional
on the lease being free or its own, so a row indexed by two nodes runs on one.

A node that starts touches only its own rows (`recover_own`): what it left running fails with the
restart reason, what it left queued is free again. Rows with no owner at all (written before
leases existed, or by a single node's previous process) count as its own.

On one node on SQLite the same code runs: the claim finds nothing it does not already index, and
`FOR UPDATE SKIP LOCKED` is simply not rendered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Table, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core import leases
from app.core.db import utcnow
from app.jobs.queue import JobQueue, QueuedJob

log = structlog.get_logger(__name__)

FailHandler = Callable[[Session, list[str], str], list[str]]
RECOVER_BATCH = 100
JOIN_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class LeasedKind:
    """What WorkLeases needs to know of one kind of work; the domain's worker builds it.

    Args:
        name: for logs ("job", "submission").
        table: the claimable table (`lease_owner`, `lease_expires_at`, `cancel_requested`).
        queued: the condition of a row not started yet.
        started: the condition of a row a node is working on.
        order_by: the claim order (oldest first).
        describe: the queued rows with these ids, as the queue indexes them.
        fail: move these started rows to failed with the reason (and enqueue their webhooks,
            release their leases); the ids it moved. Runs inside the caller's transaction.
        expired_reason: why a row whose node died failed.
        restart_reason: why a row this node left running when it stopped failed.
    """

    name: str
    table: Table
    queued: ColumnElement[bool]
    started: ColumnElement[bool]
    order_by: Sequence[Any]
    describe: Callable[[Session, list[str]], list[QueuedJob]]
    fail: FailHandler
    expired_reason: str
    restart_reason: str


def recover_own(
    session_factory: sessionmaker[Session], kind: LeasedKind, owner: str
) -> tuple[list[str], list[QueuedJob]]:
    """At start-up: fail what this node left running, free what it left queued. Returns the ids
    it failed and every queued row no live lease holds (to index, oldest first)."""
    table = kind.table
    mine = or_(table.c.lease_owner == owner, table.c.lease_owner.is_(None))
    with session_factory() as session:
        running = list(session.scalars(select(table.c.id).where(kind.started, mine)))
        failed = kind.fail(session, running, kind.restart_reason)
        session.execute(
            update(table).where(kind.queued, table.c.lease_owner == owner).values(**leases.RELEASED)
        )
        free = or_(table.c.lease_owner.is_(None), table.c.lease_expires_at < utcnow())
        ids = session.scalars(select(table.c.id).where(kind.queued, free).order_by(*kind.order_by))
        queued = kind.describe(session, list(ids))
        session.commit()
    if failed or queued:
        log.warning(f"{kind.name}s_recovered", failed_running=len(failed), queued=len(queued))
    return failed, queued


class WorkLeases:
    """The claim / recover / renew thread of one node for one kind of work."""

    def __init__(
        self,
        *,
        kind: LeasedKind,
        queue: JobQueue,
        session_factory: sessionmaker[Session],
        owner: str,
        lease_s: float,
        renew_interval_s: float,
        poll_interval_s: float,
        on_failed: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.kind = kind
        self.queue = queue
        self.session_factory = session_factory
        self.owner = owner
        self.lease_s = lease_s
        self.renew_interval_s = renew_interval_s
        self.poll_interval_s = poll_interval_s
        self.on_failed = on_failed  # e.g. publish the final state of what it failed
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._renewed_at = time.monotonic()
        self._missing: set[str] = set()
        self._looked_at = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"{kind.name}-leases", daemon=True)
        queue.on_room(self._wake.set)

    # ------------------------------------------------------------------ start and stop

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming and give back the leases of what is still only queued here, so that
        another node runs it at once instead of after the lease expires."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=JOIN_TIMEOUT_S)
        pending, _running = self.queue.held_ids()
        try:
            with self.session_factory() as session:
                leases.release(session, self.kind.table, pending, owner=self.owner)
                session.commit()
        except Exception:  # the database is away: the leases simply expire
            log.exception(f"{self.kind.name}_leases_not_released")

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:  # the database may be briefly away: try again, do not die
                log.exception(f"{self.kind.name}_leases_error")
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def tick(self) -> None:
        """One round: recover and follow cancels once per poll interval, renew when due, and
        claim what there is room for (a worker that is done wakes the thread for that alone:
        in a burst the extra look costs no query while this node's own queue is long)."""
        now = time.monotonic()
        if now - self._looked_at >= self.poll_interval_s:
            self._looked_at = now
            self.recover_expired()
            self._follow_cancels()
        if now - self._renewed_at >= self.renew_interval_s:
            self.renew()
        while not self._stopping.is_set() and self.claim() > 0:
            pass

    def recover_expired(self) -> list[str]:
        """Fail the started rows whose node stopped renewing; the ids this node failed."""
        with self.session_factory() as session:
            expired = leases.claim_expired(
                session,
                self.kind.table,
                where=self.kind.started,
                limit=RECOVER_BATCH,
                owner=self.owner,
                lease_s=self.lease_s,
                now=utcnow(),
            )
            failed = self.kind.fail(session, expired, self.kind.expired_reason)
            session.commit()
        if failed:
            log.warning(f"{self.kind.name}s_of_a_dead_node_failed", ids=failed)
            if self.on_failed is not None:
                self.on_failed(failed)
        return failed

    def claim(self) -> int:
        """Claim and index up to `room` queued rows no live lease holds; how many were new."""
        room = self.queue.room()
        if room <= 0:
            return 0
        with self.session_factory() as session:
            ids = leases.claim(
                session,
                self.kind.table,
                where=self.kind.queued,
                order_by=self.kind.order_by,
                limit=room,
                owner=self.owner,
                lease_s=self.lease_s,
                now=utcnow(),
            )
            claimed = self.kind.describe(session, ids) if ids else []
            session.commit()
        return self.queue.requeue(claimed)

    def renew(self) -> None:
        """Extend the leases of what this node holds; stop the runs another node took over."""
        pending, running = self.queue.held_ids()
        with self.session_factory() as session:
            renewed = leases.renew(
                session,
                self.kind.table,
                [*pending, *running],
                owner=self.owner,
                lease_s=self.lease_s,
                now=utcnow(),
            )
            session.commit()
        self._renewed_at = time.monotonic()
        # A row missing from `renewed` was either stored by its worker since the snapshot (the
        # worker lets go of it a moment later) or taken over by another node: only one still
        # held and missing twice in a row is lost.
        missing = set(running) - renewed
        lost, self._missing = missing & self._missing, missing
        if lost:
            log.warning(f"{self.kind.name}_leases_lost", ids=sorted(lost))
            self.queue.lease_lost(lost)

    def _follow_cancels(self) -> None:
        """A cancel that reached another node only wrote `cancel_requested`: act on it here."""
        _pending, running = self.queue.held_ids()
        if not running:
            return
        table = self.kind.table
        with self.session_factory() as session:
            asked = list(
                session.scalars(
                    select(table.c.id).where(table.c.id.in_(running), table.c.cancel_requested)
                )
            )
        for row_id in asked:
            self.queue.cancel(row_id)
