"""Every SQL statement about submissions. Status changes are conditional UPDATEs, so a worker and a
cancel (or two workers) can never both move the same submission."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.core import leases
from app.core.db import utcnow
from app.submissions.models import (
    Submission,
    SubmissionCase,
    SubmissionMetadata,
    SubmissionStatus,
)

RESTART_REASON = "the service stopped while the submission was being graded"
EXPIRED_REASON = "the node grading the submission stopped answering (its lease expired)"
TABLE = Submission.__table__
QUEUED = Submission.status == SubmissionStatus.QUEUED.value
STARTED = Submission.status == SubmissionStatus.RUNNING.value
CLAIM_ORDER = (Submission.created_at.asc(), Submission.id.asc())


def add(
    session: Session,
    submission: Submission,
    cases: Sequence[SubmissionCase],
    metadata: Sequence[tuple[str, str]],
) -> Submission:
    session.add(submission)
    session.flush()  # the parent row first: PostgreSQL checks the foreign keys per statement
    session.add_all(cases)
    session.add_all(
        SubmissionMetadata(submission_id=submission.id, key=key, value=value)
        for key, value in metadata
    )
    session.flush()
    return submission


def get(session: Session, submission_id: str) -> Submission | None:
    return session.get(Submission, submission_id)


def get_by_idempotency_key(session: Session, *, user_id: str, key: str) -> Submission | None:
    stmt = select(Submission).where(
        Submission.user_id == user_id, Submission.idempotency_key == key
    )
    return session.scalars(stmt).first()


def cases_of(session: Session, submission_id: str) -> Sequence[SubmissionCase]:
    stmt = (
        select(SubmissionCase)
        .where(SubmissionCase.submission_id == submission_id)
        .order_by(SubmissionCase.number)
    )
    return session.scalars(stmt).all()


def metadata_of(session: Session, submission_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """The metadata of each submission, in one query for a whole page."""
    found: dict[str, dict[str, str]] = {submission_id: {} for submission_id in submission_ids}
    if not submission_ids:
        return found
    stmt = select(SubmissionMetadata).where(SubmissionMetadata.submission_id.in_(submission_ids))
    for row in session.scalars(stmt):
        found[row.submission_id][row.key] = row.value
    return found


def list_submissions(
    session: Session,
    *,
    user_id: str | None,
    filters: dict[str, str],
    metadata: dict[str, str],
    limit: int,
    offset: int,
) -> tuple[Sequence[Submission], int]:
    """A page, newest first, and how many match. Each metadata filter is an indexed lookup of
    (key, value) in the side table."""
    conditions: list[Any] = []
    if user_id is not None:
        conditions.append(Submission.user_id == user_id)
    for column, value in filters.items():
        conditions.append(getattr(Submission, column) == value)
    for key, value in metadata.items():
        matching = select(SubmissionMetadata.submission_id).where(
            SubmissionMetadata.key == key, SubmissionMetadata.value == value
        )
        conditions.append(Submission.id.in_(matching))
    total = session.scalar(select(func.count()).select_from(Submission).where(*conditions)) or 0
    stmt = (
        select(Submission)
        .where(*conditions)
        .order_by(Submission.created_at.desc(), Submission.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return session.scalars(stmt).all(), total


def claim(session: Session, submission_id: str, *, owner: str, lease_s: float) -> bool:
    """queued -> running, leased to `owner`; False when someone else moved it first (cancelled,
    or claimed by another node: the lease must be free or already `owner`'s)."""
    now = utcnow()
    stmt = (
        update(Submission)
        .where(
            Submission.id == submission_id,
            Submission.status == SubmissionStatus.QUEUED.value,
            leases.free_or_held_by(TABLE, owner, now),
        )
        .values(
            status=SubmissionStatus.RUNNING.value,
            started_at=now,
            **leases.held(owner, lease_s, now),
        )
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def record_cases(session: Session, submission_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Every graded case's columns (each row has `number`) in one executemany, by primary key."""
    if rows:
        keyed = [{"submission_id": submission_id, **row} for row in rows]
        session.execute(update(SubmissionCase), keyed)


def finish(session: Session, submission_id: str, values: dict[str, Any]) -> bool:
    """running -> a final status, its lease released; False when it is no longer running
    (cancelled, or failed by a node that took it over)."""
    stmt = (
        update(Submission)
        .where(Submission.id == submission_id, Submission.status == SubmissionStatus.RUNNING.value)
        .values(finished_at=utcnow(), **values, **leases.RELEASED)
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def finish_with_cases(
    session: Session, submission_id: str, values: dict[str, Any], rows: Sequence[dict[str, Any]]
) -> bool:
    """`finish`, and only when it took, every graded case's row: a submission that another node
    failed when this node's lease lapsed keeps exactly the answer it was given."""
    if not finish(session, submission_id, values):
        return False
    record_cases(session, submission_id, rows)
    return True


def cancel_queued(session: Session, submission_id: str) -> bool:
    stmt = (
        update(Submission)
        .where(Submission.id == submission_id, Submission.status == SubmissionStatus.QUEUED.value)
        .values(
            status=SubmissionStatus.CANCELLED.value,
            cancel_requested=True,
            finished_at=utcnow(),
            **leases.RELEASED,
        )
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def request_cancel_running(session: Session, submission_id: str) -> bool:
    stmt = (
        update(Submission)
        .where(Submission.id == submission_id, Submission.status == SubmissionStatus.RUNNING.value)
        .values(cancel_requested=True)
    )
    return session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]


def fail_running(session: Session, *, reason: str, ids: Sequence[str] | None = None) -> int:
    """Every running submission (or the given ones) -> failed with `reason`."""
    stmt = update(Submission).where(Submission.status == SubmissionStatus.RUNNING.value)
    if ids is not None:
        stmt = stmt.where(Submission.id.in_(ids))
    stmt = stmt.values(
        status=SubmissionStatus.FAILED.value, finished_at=utcnow(), error=reason, **leases.RELEASED
    )
    return session.execute(stmt).rowcount  # type: ignore[attr-defined, no-any-return]


def fail_started(session: Session, ids: Sequence[str], reason: str) -> list[str]:
    """The given running submissions -> failed with `reason`; the ids moved."""
    if not ids:
        return []
    stmt = (
        update(Submission)
        .where(Submission.id.in_(list(ids)), STARTED)
        .values(
            status=SubmissionStatus.FAILED.value,
            finished_at=utcnow(),
            error=reason,
            **leases.RELEASED,
        )
        .returning(Submission.id)
    )
    return list(session.scalars(stmt))


def queued(session: Session, ids: Sequence[str] | None = None) -> list[tuple[str, str, float]]:
    """(id, user id, summed case timeouts) of every queued submission (or of the given ones),
    oldest first."""
    stmt = (
        select(Submission.id, Submission.user_id, func.sum(SubmissionCase.timeout_s))
        .join(SubmissionCase, SubmissionCase.submission_id == Submission.id)
        .where(QUEUED)
        .group_by(Submission.id, Submission.user_id, Submission.created_at)
        .order_by(*CLAIM_ORDER)
    )
    if ids is not None:
        stmt = stmt.where(Submission.id.in_(list(ids)))
    return [(sid, uid, float(total or 0)) for sid, uid, total in session.execute(stmt)]
