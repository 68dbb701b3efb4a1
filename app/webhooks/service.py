"""What other domains call: check a callback URL at submit time, enqueue a delivery in the
transaction that finishes a resource, and read a resource's deliveries. Also the retry rule.

A delivery is enqueued in the same transaction as the final state it carries, so a resource is
never finished without its delivery nor delivered without being finished (at-least-once). The
delivery worker is woken after that commit (`WAKE_KEY` in the session's info); it also polls,
so a wake that is lost (another process, a crash) costs a moment, never a delivery.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.db import utcnow
from app.webhooks import repository
from app.webhooks.models import Delivery, DeliveryStatus
from app.webhooks.schemas import DeliveryView
from app.webhooks.urls import check_callback_url

__all__ = ["check_callback_url", "deliveries_for", "enqueue_delivery", "retry_delay_s"]

WAKE_KEY = "webhooks.enqueued"
RESOURCE_PATTERN = r"^[a-z][a-z_]{0,15}$"


def enqueue_delivery(
    session: Session, *, resource: str, resource_id: str, url: str, payload: dict[str, Any]
) -> None:
    """Store a `{resource}.finished` delivery of `payload` to `url`, due at once.

    Call it inside the transaction that moves the resource to its final state; the caller
    commits. `url` must have passed check_callback_url when it was submitted; every attempt
    checks it again.
    """
    now = utcnow()
    event = f"{resource}.finished"
    body = {"type": event, "timestamp": now.isoformat(), "data": payload}
    delivery = Delivery(
        resource=resource,
        resource_id=resource_id,
        event=event,
        url=url,
        payload=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=DeliveryStatus.PENDING.value,
        created_at=now,
        next_attempt_at=now,
    )
    repository.add(session, delivery)
    session.info[WAKE_KEY] = True


def deliveries_for(session: Session, resource: str, resource_id: str) -> list[DeliveryView]:
    """The resource's deliveries, oldest first, as its answer shows them."""
    rows = repository.for_resource(session, resource, resource_id)
    return [DeliveryView.from_delivery(row) for row in rows]


def retry_delay_s(settings: Settings, attempts: int) -> float:
    """The wait after `attempts` failed attempts: WEBHOOK_RETRY_BASE_S doubled after each,
    at most WEBHOOK_RETRY_MAX_S."""
    exponent = min(max(attempts - 1, 0), 62)
    return float(min(settings.webhook_retry_max_s, settings.webhook_retry_base_s * 2**exponent))


def outcome_values(
    settings: Settings, *, attempts: int, status_code: int | None, error: str | None
) -> dict[str, Any]:
    """The delivery's columns after its attempt number `attempts` ended this way."""
    now = utcnow()
    values: dict[str, Any] = {"last_status_code": status_code, "last_error": error}
    if error is None and status_code is not None and 200 <= status_code < 300:
        return values | {
            "status": DeliveryStatus.DELIVERED.value,
            "delivered_at": now,
            "next_attempt_at": None,
        }
    if attempts >= settings.webhook_max_attempts:
        return values | {"status": DeliveryStatus.FAILED.value, "next_attempt_at": None}
    due: datetime = now + timedelta(seconds=retry_delay_s(settings, attempts))
    return values | {"status": DeliveryStatus.PENDING.value, "next_attempt_at": due}
