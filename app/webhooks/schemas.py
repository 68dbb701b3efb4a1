"""How a delivery shows on its resource (`deliveries` of a job or a submission)."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import BaseModel, Field

from app.webhooks.models import Delivery, DeliveryStatus


class DeliveryView(BaseModel):
    """One webhook delivery: where it stands, and what the receiver answered last."""

    delivery_id: str = Field(description="also the `webhook-id` header of every attempt")
    event: str
    status: DeliveryStatus
    attempts: int = Field(description="attempts made so far (at most WEBHOOK_MAX_ATTEMPTS)")
    last_status_code: int | None = Field(description="the receiver's last HTTP status")
    last_error: str | None = Field(description="why the last attempt failed, if it did")
    next_attempt_at: datetime | None = Field(description="when the next attempt is due")
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime

    @classmethod
    def from_delivery(cls, delivery: Delivery) -> Self:
        return cls(
            delivery_id=delivery.id,
            event=delivery.event,
            status=DeliveryStatus(delivery.status),
            attempts=delivery.attempts,
            last_status_code=delivery.last_status_code,
            last_error=delivery.last_error,
            next_attempt_at=delivery.next_attempt_at,
            last_attempt_at=delivery.last_attempt_at,
            delivered_at=delivery.delivered_at,
            created_at=delivery.created_at,
        )
