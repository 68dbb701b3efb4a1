"""Every SQL statement about webhook deliveries. A status change is a conditional UPDATE, so an
attempt's outcome can never overwrite a delivery somebody else has moved on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app.core import leases
from app.webhooks.models import Delivery, DeliveryStatus

TABLE = Delivery.__table__
SENDING = Delivery.status == DeliveryStatus.SENDING.value


def add(session: Session, delivery: Delivery) -> Delivery:
    session.add(delivery)
    session.flush()
    return delivery


def for_resource(session: Session, resource: str, resource_id: str) -> Sequence[Delivery]:
    stmt = (
        select(Delivery)
        .where(Delivery.resource == resource, Delivery.resource_id == resource_id)
        .order_by(Delivery.created_at.asc(), Delivery.id.asc())
    )
    return session.scalars(stmt).all()


def claim_due(
    session: Session, *, now: datetime, limit: int, owner: str, lease_s: float
) -> list[Delivery]:
    """pending and due -> sending, leased to `owner`, oldest due first; the deliveries this node
    now sends. On PostgreSQL `FOR UPDATE SKIP LOCKED`: nodes claiming at once never wait for each
    other nor take the same delivery."""
    claimed = leases.claim(
        session,
        TABLE,
        where=(Delivery.status == DeliveryStatus.PENDING.value) & (Delivery.next_attempt_at <= now),
        order_by=[Delivery.next_attempt_at.asc(), Delivery.id.asc()],
        limit=limit,
        owner=owner,
        lease_s=lease_s,
        now=now,
        values={"status": DeliveryStatus.SENDING.value, "last_attempt_at": now},
    )
    return by_ids(session, claimed)


def by_ids(session: Session, delivery_ids: Sequence[str]) -> list[Delivery]:
    if not delivery_ids:
        return []
    stmt = (
        select(Delivery)
        .where(Delivery.id.in_(list(delivery_ids)))
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(stmt).all())


def record_attempt(
    session: Session, delivery_id: str, values: dict[str, Any], *, owner: str
) -> bool:
    """sending (by `owner`) -> the attempt's outcome (`values`), the lease released; False when
    the delivery is not `owner`'s attempt any more (another node took it over)."""
    stmt = (
        update(Delivery)
        .where(Delivery.id == delivery_id, SENDING, Delivery.lease_owner == owner)
        .values(attempts=Delivery.attempts + 1, **values, **leases.RELEASED)
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def release_sending(session: Session, *, now: datetime, owner: str) -> int:
    """The deliveries this node (or an unleased process before it) left `sending` when it
    stopped mid-attempt -> pending, due now. Other nodes' attempts are theirs."""
    stmt = (
        update(Delivery)
        .where(SENDING, or_(Delivery.lease_owner == owner, Delivery.lease_owner.is_(None)))
        .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now, **leases.RELEASED)
    )
    return session.execute(stmt).rowcount  # type: ignore[attr-defined, no-any-return]


def take_over_expired(
    session: Session, *, now: datetime, limit: int, owner: str, lease_s: float
) -> list[Delivery]:
    """Sending deliveries whose node stopped renewing its lease, now leased to `owner` so that
    exactly one node records their attempt as failed."""
    ids = leases.claim_expired(
        session, TABLE, where=SENDING, limit=limit, owner=owner, lease_s=lease_s, now=now
    )
    return by_ids(session, ids)


def next_due_at(session: Session) -> datetime | None:
    stmt = select(func.min(Delivery.next_attempt_at)).where(
        Delivery.status == DeliveryStatus.PENDING.value
    )
    return session.scalar(stmt)
