"""An app whose delivery worker sends to a loopback receiver, and ways to feed and watch it.

Deliveries are enqueued through the module's public `enqueue_delivery`, as the jobs and
submissions domains do, with a resource kind of the test's choosing: the worker is generic.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.migrations import upgrade_to_head
from app.main import create_app
from app.webhooks.schemas import DeliveryView
from app.webhooks.service import deliveries_for, enqueue_delivery
from app.webhooks.urls import IPAddress, Resolver, resolve_host

# Short enough for a test, long enough that a restart happens between two attempts.
FAST_RETRIES: dict[str, Any] = {
    "webhook_allowed_hosts": ["127.0.0.1/32"],
    "webhook_retry_base_s": 0.3,
    "webhook_retry_max_s": 5.0,
    "webhook_timeout_s": 2.0,
    "shutdown_grace_s": 0.2,
}


class FakeDns:
    """A resolver the test controls for its own names; every other name goes to the system."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host in self.answers:
            return [ipaddress.ip_address(text) for text in self.answers[host]]
        return resolve_host(host, port)


@contextmanager
def running(settings: Settings, resolver: Resolver | None = None) -> Iterator[TestClient]:
    upgrade_to_head(settings.database_url)
    app = create_app(settings)
    if resolver is not None:
        app.state.webhook_resolver = resolver
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def enqueue(
    client: TestClient, url: str, payload: dict[str, Any], resource: str = "submission"
) -> str:
    """Enqueue a delivery as a finishing resource would; the resource's id."""
    resource_id = str(uuid.uuid4())
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        enqueue_delivery(
            session, resource=resource, resource_id=resource_id, url=url, payload=payload
        )
        session.commit()
    return resource_id


def views(client: TestClient, resource_id: str, resource: str = "submission") -> list[DeliveryView]:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return deliveries_for(session, resource, resource_id)


def wait_until(
    client: TestClient,
    resource_id: str,
    done: Callable[[DeliveryView], bool],
    timeout_s: float = 15.0,
    resource: str = "submission",
) -> DeliveryView:
    deadline = time.monotonic() + timeout_s
    while True:
        (view,) = views(client, resource_id, resource)
        if done(view) or time.monotonic() > deadline:
            return view
        time.sleep(0.02)


def delivered(view: DeliveryView) -> bool:
    return view.status == "delivered"
