"""Engine, sessions and the declarative base.

SQLite is the embedded default: WAL so readers never block the writer, foreign keys on, synchronous
FULL so an acknowledged write survives a power loss, and a busy timeout so concurrent writers wait
instead of failing. PostgreSQL is used as it comes through DATABASE_URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, LargeBinary, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from app.core.config import Settings

# Connections are cheap in SQLite: enough for every run slot, job worker and reader at once.
SQLITE_POOL_SIZE = 20
SQLITE_POOL_OVERFLOW = 40


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware column: stored as UTC, always read back with tzinfo (SQLite drops it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused; use an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Utf8Bytes(TypeDecorator[str]):
    """Text kept as its UTF-8 bytes (PostgreSQL `bytea`, SQLite `BLOB`), for what users write.

    PostgreSQL's `text` refuses U+0000, and code and program output may contain it (binary
    output, a C string gone wrong). Stored as bytes, every string is kept exactly and both
    databases store and return the same thing. Such columns are never searched by content.
    """

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        # Strict: a lone surrogate is refused before it gets here (see the jobs service).
        return None if value is None else value.encode("utf-8")

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else bytes(value).decode("utf-8")


class Base(DeclarativeBase):
    pass


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    return on_connect


def create_db_engine(settings: Settings) -> Engine:
    """Build the engine for DATABASE_URL, creating the SQLite data directory when needed."""
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=settings.database_echo,
            # A short wait when every connection is taken: then 503, never a 30 s stall.
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=SQLITE_POOL_OVERFLOW,
            pool_timeout=settings.database_connect_timeout_s,
            connect_args={
                "check_same_thread": False,
                "timeout": settings.sqlite_busy_timeout_ms / 1000,
            },
        )
        event.listen(engine, "connect", _sqlite_pragmas(settings.sqlite_busy_timeout_ms))
        return engine
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(
        url,
        echo=settings.database_echo,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=settings.database_connect_timeout_s,
        connect_args={"connect_timeout": max(1, int(settings.database_connect_timeout_s))},
    )


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends cleanly, roll back when it raises.

    A request's session must end before its response is sent (`SessionDep` is function-scoped):
    a commit that fails must be able to change the answer.
    """
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def ping(engine: Engine) -> float:
    """Run `SELECT 1` and return its latency in milliseconds; raises when the database is down."""
    started = time.perf_counter()
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return (time.perf_counter() - started) * 1000
