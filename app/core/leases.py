"""Leases on claimable rows: which node works on a queued job, a submission or a webhook delivery,
and until when (issue 14: several nodes on one database).

A claimable table has two columns, `lease_owner` (a node id, NULL when nobody holds the row) and
`lease_expires_at`. A node claims rows, renews its leases while it works, and releases them when
the work is stored. A node that dies stops renewing: its leases expire and any node recovers the
rows with `claim_expired` (the domain then decides, from the row's own status, whether it runs
again or fails with a reason).

Why hand-written SQL and not a queue library on PostgreSQL (procrastinate, pgqueuer, ...): those
are PostgreSQL-only and keep their own job tables, while warmbox's single node on SQLite must keep
working with the same code path, and its work rows (jobs, submissions, deliveries) are the API's
own resources with their own status columns. The whole mechanism is two statements:

- PostgreSQL: `SELECT ... FOR UPDATE SKIP LOCKED` picks candidates that no other node's open
  claim is looking at (no waiting, no double pick), then a conditional `UPDATE ... RETURNING`.
- SQLite (one node): `FOR UPDATE` is not rendered; the conditional `UPDATE ... WHERE lease is
  free ... RETURNING` alone guarantees that two threads never take the same row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, or_, select, update
from sqlalchemy.orm import Session


def _free(table: Table, now: datetime) -> ColumnElement[bool]:
    return or_(table.c.lease_owner.is_(None), table.c.lease_expires_at < now)


def free_or_held_by(table: Table, owner: str, now: datetime) -> ColumnElement[bool]:
    """The condition under which `owner` may take a row: nobody's, expired, or already its own."""
    return or_(_free(table, now), table.c.lease_owner == owner)


def held(owner: str, lease_s: float, now: datetime) -> dict[str, Any]:
    """The lease columns of a row that `owner` holds for `lease_s` from `now`."""
    return {"lease_owner": owner, "lease_expires_at": now + timedelta(seconds=lease_s)}


# The lease columns of a row nobody holds (its work is stored, or given back).
RELEASED: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}


def claim(
    session: Session,
    table: Table,
    *,
    where: ColumnElement[bool],
    order_by: Sequence[Any],
    limit: int,
    owner: str,
    lease_s: float,
    now: datetime,
    values: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Lease to `owner` up to `limit` rows matching `where` that no live lease holds; their ids.
    `values` are set in the same UPDATE (e.g. a delivery's `status=sending`).

    Commit promptly: on PostgreSQL the picked rows stay locked until the transaction ends.
    """
    condition = and_(where, _free(table, now))
    return _take(session, table, condition, order_by, limit, held(owner, lease_s, now), values)


def claim_expired(
    session: Session,
    table: Table,
    *,
    where: ColumnElement[bool],
    limit: int,
    owner: str,
    lease_s: float,
    now: datetime,
) -> list[Any]:
    """Take over rows whose owner stopped renewing (a dead node): the recovering node's ids."""
    expired = and_(where, table.c.lease_owner.is_not(None), table.c.lease_expires_at < now)
    order = [table.c.lease_expires_at]
    return _take(session, table, expired, order, limit, held(owner, lease_s, now), None)


def renew(
    session: Session, table: Table, ids: Sequence[Any], *, owner: str, lease_s: float, now: datetime
) -> set[Any]:
    """Extend `owner`'s leases on `ids`; the ids it still holds (a lost one was taken over)."""
    if not ids:
        return set()
    statement = (
        update(table)
        .where(table.c.id.in_(list(ids)), table.c.lease_owner == owner)
        .values(lease_expires_at=now + timedelta(seconds=lease_s))
        .returning(table.c.id)
    )
    return set(session.scalars(statement))


def release(session: Session, table: Table, ids: Sequence[Any], *, owner: str) -> set[Any]:
    """Give up `owner`'s leases on `ids` (the work is stored); the ids it still held."""
    if not ids:
        return set()
    statement = (
        update(table)
        .where(table.c.id.in_(list(ids)), table.c.lease_owner == owner)
        .values(**RELEASED)
        .returning(table.c.id)
    )
    return set(session.scalars(statement))


def _take(
    session: Session,
    table: Table,
    condition: ColumnElement[bool],
    order_by: Sequence[Any],
    limit: int,
    lease: dict[str, Any],
    values: Mapping[str, Any] | None,
) -> list[Any]:
    if limit <= 0:
        return []
    pick = (
        select(table.c.id)
        .where(condition)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.scalars(pick))
    if not ids:
        return []
    taken = (
        update(table)
        .where(table.c.id.in_(ids), condition)  # still free: another thread may have won it
        .values(**lease, **(values or {}))
        .returning(table.c.id)
    )
    won = set(session.scalars(taken))
    return [row_id for row_id in ids if row_id in won]  # in the order asked for
