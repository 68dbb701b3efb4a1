"""A delivery is one resource's final state on its way to one callback URL; the database is
its only truth, so a delivery outlives the process that enqueued it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.auth.models import new_id
from app.core.db import Base, UTCDateTime, Utf8Bytes, utcnow


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its next attempt (at next_attempt_at)
    SENDING = "sending"  # an attempt is in flight
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # every attempt failed; no more are made


class Delivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_resource", "resource", "resource_id"),
        Index("ix_webhook_deliveries_lease", "status", "lease_expires_at"),
    )

    # Also the `webhook-id` header: the same on every attempt, so a receiver can drop repeats.
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    resource: Mapped[str] = mapped_column(String(16))  # "job", "submission"
    resource_id: Mapped[str] = mapped_column(String(36))
    event: Mapped[str] = mapped_column(String(64))  # "job.finished"
    url: Mapped[str] = mapped_column(String(2048))
    # The exact JSON body, fixed at enqueue time: every attempt sends (and signs) the same bytes.
    payload: Mapped[str] = mapped_column(Utf8Bytes())
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # attempts that ended
    last_status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    # The node whose attempt is in flight and until when (app/core/leases.py).
    lease_owner: Mapped[str | None] = mapped_column(String(64), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
