"""Engine, sessions and the declarative base.

SQLite is the embedded default: WAL so readers never block the writer, foreign keys on, synchronous
FULL so an acknowledged write survives a power loss, and a busy timeout so concurrent writers wait
instead of failing. The writers of one process queue for SQLite's one write lock in order
(`SQLiteWriteQueue`) instead of each polling it with SQLite's busy handler, whose sleeps grow to
100 ms: under a burst of writers that polling left the lock idle between holders and let one
writer lose to later ones for seconds. PostgreSQL is used as it comes through DATABASE_URL.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import DateTime, Engine, LargeBinary, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
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


WRITE_STATEMENTS = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_write_queues: WeakKeyDictionary[Engine, SQLiteWriteQueue] = WeakKeyDictionary()
_interactive: ContextVar[bool] = ContextVar("interactive_write", default=False)


@contextmanager
def interactive_writes() -> Iterator[None]:
    """The writes made inside go ahead of background writers queued for SQLite's write lock
    (a synchronous run's result, which a caller is waiting for, before a class's submissions
    being stored or graded). No effect on PostgreSQL, whose writers do not share one lock."""
    token = _interactive.set(True)
    try:
        yield
    finally:
        _interactive.reset(token)


class SQLiteWriteQueue:
    """One process's SQLite writers, let through one at a time: in arrival order, except that a
    writer inside `interactive_writes` (somebody waits for it) goes before background ones.

    SQLite lets one connection write at a time; a connection that finds the lock taken sleeps in
    the busy handler (1, 2, 5, ... 100 ms) and tries again, so the lock sits idle between a commit
    and the next poll, and a writer can lose to later arrivals again and again (a synchronous run
    waited 1.1 s to store its result while a class's submissions were being stored). Here a
    connection takes a ticket before its transaction's first write and gives it back when
    the connection returns to the pool (after its commit or rollback): the same span for which
    SQLite holds its own lock, so nothing waits that would not have waited anyway. A connection
    that gets no ticket within the busy timeout fails as SQLite would ("database is locked", a
    503). Other processes on the same file (a second worker, the CLI) still meet at SQLite's lock.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._waiters: list[tuple[bool, threading.Event]] = []
        self._held = False

    @property
    def waiting(self) -> int:
        """Writers queued for their turn (not counting the one writing)."""
        with self._lock:
            return len(self._waiters)

    @property
    def held(self) -> bool:
        with self._lock:
            return self._held

    def acquire(self) -> bool:
        with self._lock:
            if not self._held and not self._waiters:
                self._held = True
                return True
            turn = threading.Event()
            self._waiters.append((_interactive.get(), turn))
        if turn.wait(self.timeout_s):
            return True
        with self._lock:
            if turn.is_set():  # handed over just as the wait ended
                return True
            self._waiters = [waiter for waiter in self._waiters if waiter[1] is not turn]
        return False

    def release(self) -> None:
        with self._lock:
            if not self._waiters:
                self._held = False
                return
            # Handed straight to the next (it stays held): the first interactive writer, if any.
            index = next((i for i, (first, _) in enumerate(self._waiters) if first), 0)
            self._waiters.pop(index)[1].set()

    def install(self, engine: Engine) -> None:
        """Take a ticket before a connection's first write; give it back at check-in."""
        _write_queues[engine] = self

        @event.listens_for(engine, "before_cursor_execute")
        def before_write(conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            info = conn.connection.record_info  # lives as long as the pool's record
            if info.get("write_ticket") or not statement.lstrip()[:7].upper().startswith(
                WRITE_STATEMENTS
            ):
                return
            if not self.acquire():
                raise OperationalError(
                    statement, params, sqlite3.OperationalError("database is locked")
                )
            info["write_ticket"] = True

        @event.listens_for(engine.pool, "checkin")
        def give_back(_dbapi_connection: Any, record: Any) -> None:
            if record is not None and record.record_info.pop("write_ticket", False):
                self.release()


def sqlite_write_queue(engine: Engine) -> SQLiteWriteQueue | None:
    """The write queue of a SQLite engine made by `create_db_engine` (None for PostgreSQL)."""
    return _write_queues.get(engine)


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
        SQLiteWriteQueue(settings.sqlite_busy_timeout_ms / 1000).install(engine)
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
