"""Webhook deliveries between two nodes (two DeliveryWorkers with their own NODE_ID) on one real
PostgreSQL and a real receiver on loopback: the node whose attempt is in flight stops renewing
(it looks dead), the other counts that attempt as failed with the lease reason and delivers the
retry; the first node's late answer changes nothing, and starting a node never touches another
node's attempt in flight."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.db import create_session_factory
from app.webhooks.models import Delivery
from app.webhooks.service import enqueue_delivery
from app.webhooks.urls import resolve_host
from app.webhooks.worker import EXPIRED_REASON, DeliveryWorker
from tests.databases import PostgresServer
from tests.webhooks.receiver import receiver_on

pytestmark = pytest.mark.postgres

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@pytest.fixture
def factory(
    postgres_server: PostgresServer, postgres_template: str
) -> Iterator[sessionmaker[Session]]:
    url = postgres_server.create("warmbox_webhook_leases", template_url=postgres_template)
    engine = create_engine(url)
    yield create_session_factory(engine)
    engine.dispose()
    postgres_server.drop(url)


def node_settings(tmp_path: Path, node_id: str, retry_base_s: float = 0.3) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        data_dir=tmp_path,
        node_id=node_id,
        webhook_secret=SECRET,
        webhook_allowed_hosts=["127.0.0.1/32"],
        webhook_retry_base_s=retry_base_s,
        webhook_timeout_s=20.0,
        lease_ttl_s=1.0,
        lease_renew_interval_s=0.3,
        work_poll_interval_s=0.1,
    )


def delivery(factory: sessionmaker[Session], delivery_id: str) -> Delivery:
    with factory() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        session.expunge(row)
        return row


def wait_for(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_dead_nodes_attempt_fails_with_the_reason_and_another_node_delivers_the_retry(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with receiver_on() as receiver:
        receiver.script.answers = [("hold", 200)]  # node a's attempt hangs: its node "dies"
        node_a = DeliveryWorker(
            settings=node_settings(tmp_path, "a"), session_factory=factory, resolver=resolve_host
        )
        node_a.start()
        with factory.begin() as session:
            enqueue_delivery(
                session, resource="job", resource_id="j1", url=receiver.url(), payload={"n": 1}
            )
        receiver.wait_for(1)
        with factory() as session:
            (row,) = session.query(Delivery).all()
            delivery_id = row.id
        assert (row.status, row.lease_owner) == ("sending", "a")
        node_a.stop(grace_s=0)  # no more renewals; its attempt is still waiting for an answer

        node_b = DeliveryWorker(
            settings=node_settings(tmp_path, "b"), session_factory=factory, resolver=resolve_host
        )
        node_b.start()  # its start-up leaves node a's attempt alone (else: one attempt in all)
        try:
            wait_for(lambda: delivery(factory, delivery_id).status == "delivered")
            receiver.script.release.set()  # node a's answer comes only now: too late
            wait_for(lambda: node_a.in_flight() == 0)
        finally:
            node_b.stop(grace_s=1)

    final = delivery(factory, delivery_id)
    assert (final.status, final.attempts, final.last_status_code) == ("delivered", 2, 200)
    assert final.lease_owner is None
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery_id


def test_the_lease_reason_is_stored_on_the_failed_attempt(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with receiver_on() as receiver:
        receiver.script.answers = [("hold", 200)]
        node_a = DeliveryWorker(
            settings=node_settings(tmp_path, "a"), session_factory=factory, resolver=resolve_host
        )
        node_a.start()
        with factory.begin() as session:
            enqueue_delivery(
                session, resource="job", resource_id="j2", url=receiver.url(), payload={"n": 2}
            )
        receiver.wait_for(1)
        node_a.stop(grace_s=0)
        node_b = DeliveryWorker(  # its retry waits 30 s: the recovered attempt stays visible
            settings=node_settings(tmp_path, "b", retry_base_s=30),
            session_factory=factory,
            resolver=resolve_host,
        )
        node_b.start()
        try:
            with factory() as session:
                (row,) = session.query(Delivery).all()
            wait_for(lambda: delivery(factory, row.id).attempts >= 1)
            recovered = delivery(factory, row.id)
        finally:
            node_b.stop(grace_s=0)
            receiver.script.release.set()
    assert (recovered.status, recovered.attempts) == ("pending", 1)
    assert (recovered.last_error, recovered.last_status_code) == (EXPIRED_REASON, None)
