"""DeliveryWorker: sends due webhook deliveries from the database, and records each attempt.

One dispatcher thread claims due deliveries (`repository.claim_due`, one call, leased to this
node) as far as there are free sender threads, hands each to a sender thread, and sleeps until the
next delivery is due, an attempt ends, or a commit enqueued a new one. All state is in the
database: at start-up a delivery this node left `sending` is due again, and a pending one keeps
its due time, so a restart loses nothing (at-least-once; the `webhook-id` lets a receiver drop a
repeat). Several nodes (issue 14): the dispatcher renews the leases of its attempts in flight, and
any node records the attempt of a node that died (its lease expired) as failed with a reason; the
retry schedule then sends it again. Nothing imports this module but the lifespan.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from app.core import leases
from app.core.config import Settings
from app.core.db import utcnow
from app.webhooks import repository
from app.webhooks.models import Delivery
from app.webhooks.sender import Sender
from app.webhooks.service import WAKE_KEY, outcome_values
from app.webhooks.urls import AllowList, Resolver

log = structlog.get_logger(__name__)

MIN_SLEEP_S = 0.005
JOIN_TIMEOUT_S = 3.0
RECOVER_BATCH = 100
EXPIRED_REASON = "the node sending it stopped answering (its lease expired)"


def recover(session_factory: sessionmaker[Session], owner: str) -> int:
    """Make every delivery this node left mid-attempt due now; how many there were."""
    with session_factory() as session:
        released = repository.release_sending(session, now=utcnow(), owner=owner)
        session.commit()
    if released:
        log.warning("webhook_deliveries_recovered", released=released)
    return released


class DeliveryWorker:
    """WEBHOOK_WORKERS sender threads fed by one dispatcher thread."""

    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        resolver: Resolver,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.owner = settings.effective_node_id
        # The longest sleep between two looks at the database: what a wake that never came
        # costs (an enqueue by another node, a commit outside this process's sessions).
        self.poll_interval_s = settings.work_poll_interval_s
        self._renewed_at = self._looked_at = time.monotonic()
        self.sender = Sender(
            secret=settings.webhook_secret,
            allow=AllowList.parse(settings.webhook_allowed_hosts),
            resolver=resolver,
            timeout_s=settings.webhook_timeout_s,
        )
        self._slots = settings.webhook_workers
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._senders = ThreadPoolExecutor(self._slots, thread_name_prefix="webhook-sender")
        self._dispatcher = threading.Thread(
            target=self._dispatch, name="webhook-dispatcher", daemon=True
        )

    def start(self) -> None:
        recover(self.session_factory, self.owner)
        event.listen(self.session_factory, "after_commit", self._after_commit)
        self._dispatcher.start()
        log.info("webhook_worker_started", senders=self._slots)

    def stop(self, grace_s: float) -> None:
        """Stop claiming; let attempts in flight end up to `grace_s`. One still in flight then
        stays `sending` in the database and is sent again after the next start."""
        event.remove(self.session_factory, "after_commit", self._after_commit)
        self._stopping.set()
        self._wake.set()
        self._dispatcher.join(timeout=JOIN_TIMEOUT_S)
        self._senders.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace_s
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.02)
        in_flight = self.in_flight()
        if not in_flight:  # else the attempt still uses it; it goes with the process
            self.sender.close()
        log.info("webhook_worker_stopped", in_flight=in_flight)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop(WAKE_KEY, False):
            self._wake.set()

    # ------------------------------------------------------------------ dispatcher

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            try:
                self._look_after_leases()
                self._claim_and_send()
                sleep_s = self._sleep_s()
            except Exception:  # the database may be briefly away: try again, do not die
                log.exception("webhook_dispatch_error")
                sleep_s = self.poll_interval_s
            self._wake.wait(sleep_s)
            self._wake.clear()

    def _claim_and_send(self) -> None:
        with self._lock:
            free = self._slots - len(self._in_flight)
        if free <= 0:
            return
        with self.session_factory() as session:
            claimed = repository.claim_due(
                session,
                now=utcnow(),
                limit=free,
                owner=self.owner,
                lease_s=self.settings.lease_ttl_s,
            )
            session.commit()
        for delivery in claimed:
            with self._lock:
                self._in_flight.add(delivery.id)
            self._senders.submit(self._send, delivery)

    def _sleep_s(self) -> float:
        with self.session_factory() as session:
            due: datetime | None = repository.next_due_at(session)
        if due is None:
            return self.poll_interval_s
        return min(self.poll_interval_s, max(MIN_SLEEP_S, (due - utcnow()).total_seconds()))

    # ------------------------------------------------------------------ leases

    def _look_after_leases(self) -> None:
        """Once per poll interval (the dispatcher wakes far more often in a burst): recover a
        dead node's attempts, and renew this node's leases when due."""
        now = time.monotonic()
        if now - self._looked_at >= self.poll_interval_s:
            self._looked_at = now
            self._recover_expired()
        if now - self._renewed_at >= self.settings.lease_renew_interval_s:
            self._renew()

    def _renew(self) -> None:
        with self._lock:
            in_flight = list(self._in_flight)
        with self.session_factory() as session:
            leases.renew(
                session,
                repository.TABLE,
                in_flight,
                owner=self.owner,
                lease_s=self.settings.lease_ttl_s,
                now=utcnow(),
            )
            session.commit()
        self._renewed_at = time.monotonic()

    def _recover_expired(self) -> None:
        """A node died mid-attempt: its attempt counts as failed, with the reason, and the retry
        schedule (or the last attempt's rule) decides what follows."""
        with self.session_factory() as session:
            expired = repository.take_over_expired(
                session,
                now=utcnow(),
                limit=RECOVER_BATCH,
                owner=self.owner,
                lease_s=self.settings.lease_ttl_s,
            )
            for delivery in expired:
                values = outcome_values(
                    self.settings,
                    attempts=delivery.attempts + 1,
                    status_code=None,
                    error=EXPIRED_REASON,
                )
                repository.record_attempt(session, delivery.id, values, owner=self.owner)
            session.commit()
        if expired:
            log.warning("webhook_attempts_of_a_dead_node", ids=[d.id for d in expired])

    # ------------------------------------------------------------------ one attempt

    def _send(self, delivery: Delivery) -> None:
        try:
            attempt = self.sender.attempt(
                delivery_id=delivery.id, url=delivery.url, body=delivery.payload
            )
            values = outcome_values(
                self.settings,
                attempts=delivery.attempts + 1,
                status_code=attempt.status_code,
                error=attempt.error,
            )
            with self.session_factory() as session:
                repository.record_attempt(session, delivery.id, values, owner=self.owner)
                session.commit()
            log.info(
                "webhook_attempt",
                delivery_id=delivery.id,
                attempt=delivery.attempts + 1,
                status_code=attempt.status_code,
                error=attempt.error,
                outcome=values["status"],
            )
        except Exception:  # stays `sending`; the next start makes it due again
            log.exception("webhook_attempt_not_recorded", delivery_id=delivery.id)
        finally:
            with self._lock:
                self._in_flight.discard(delivery.id)
            self._wake.set()
