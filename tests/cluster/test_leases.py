"""Leases on claimable rows (app/core/leases.py) on real SQLite and PostgreSQL: concurrent
claimers never take the same row, a dead owner's rows are recovered, a lost lease is noticed."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
)
from sqlalchemy.orm import Session, sessionmaker

from app.core import leases
from app.core.db import UTCDateTime, _sqlite_pragmas, utcnow
from tests.databases import PostgresServer

metadata = MetaData()
work = Table(
    "lease_work",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("status", String(16), nullable=False, index=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
)
ROWS = 120


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = create_engine(
            f"sqlite:///{tmp_path / 'leases.db'}",
            connect_args={"check_same_thread": False, "timeout": 10},
        )
        event.listen(engine, "connect", _sqlite_pragmas(10_000))
        url = None
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create("warmbox_leases")
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(work), [{"id": n, "status": "queued"} for n in range(ROWS)])
    yield engine
    engine.dispose()
    if url is not None:
        server.drop(url)


def claim_one_at_a_time(factory: sessionmaker[Session], owner: str, taken: list[int]) -> None:
    while True:
        with factory.begin() as session:
            ids = leases.claim(
                session,
                work,
                where=work.c.status == "queued",
                order_by=[work.c.id],
                limit=3,
                owner=owner,
                lease_s=30,
                now=utcnow(),
            )
        if not ids:
            return
        taken.extend(ids)


def test_concurrent_claimers_never_take_the_same_row(engine: Engine) -> None:
    factory = sessionmaker(bind=engine)
    taken: dict[str, list[int]] = {f"node{n}": [] for n in range(4)}
    threads = [
        threading.Thread(target=claim_one_at_a_time, args=(factory, owner, ids))
        for owner, ids in taken.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    counts = Counter(row_id for ids in taken.values() for row_id in ids)
    assert sorted(counts) == list(range(ROWS)), "a row was never claimed"
    assert max(counts.values()) == 1, "a row was claimed twice"
    with factory() as session:
        owners = dict(session.execute(select(work.c.id, work.c.lease_owner)).all())
    for owner, ids in taken.items():
        assert all(owners[row_id] == owner for row_id in ids)


def test_a_dead_owners_rows_are_recovered_and_its_renewal_fails(engine: Engine) -> None:
    factory = sessionmaker(bind=engine)
    now = utcnow()
    with factory.begin() as session:
        dead = leases.claim(
            session,
            work,
            where=work.c.status == "queued",
            order_by=[work.c.id],
            limit=5,
            owner="dead",
            lease_s=10,
            now=now,
        )
        alive = leases.claim(
            session,
            work,
            where=work.c.status == "queued",
            order_by=[work.c.id],
            limit=5,
            owner="alive",
            lease_s=60,
            now=now,
        )
    assert dead == [0, 1, 2, 3, 4]
    assert alive == [5, 6, 7, 8, 9]
    later = now + timedelta(seconds=20)  # the dead node stopped renewing 20 s ago
    with factory.begin() as session:
        recovered = leases.claim_expired(
            session,
            work,
            where=work.c.status == "queued",
            limit=50,
            owner="rescuer",
            lease_s=30,
            now=later,
        )
        assert leases.renew(session, work, alive, owner="alive", lease_s=60, now=later) == set(
            alive
        )
        assert leases.renew(session, work, dead, owner="dead", lease_s=60, now=later) == set()
    assert recovered == dead  # only the expired ones; the live node keeps its rows
    with factory.begin() as session:
        assert leases.release(session, work, recovered, owner="rescuer") == set(recovered)
        again = leases.claim(
            session,
            work,
            where=work.c.status == "queued",
            order_by=[work.c.id],
            limit=2,
            owner="next",
            lease_s=30,
            now=later,
        )
    assert again == [0, 1]  # released rows are free again
