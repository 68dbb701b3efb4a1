"""SQLite's writers queue in one process: in order, interactive ones first, nothing leaked.

Real SQLite files (WAL, the service's pragmas), real threads: a connection that has written and
not committed holds SQLite's write lock exactly as a request's unit of work does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from app.core.db import create_db_engine, interactive_writes, sqlite_write_queue

INSERT = text("INSERT INTO log (who) VALUES (:who)")


@pytest.fixture
def engine(make_settings, tmp_path: Path) -> Iterator[Engine]:
    made = create_db_engine(
        make_settings(
            database_url=f"sqlite:///{tmp_path / 'queue.db'}", sqlite_busy_timeout_ms=3000
        )
    )
    with made.begin() as connection:
        connection.execute(text("CREATE TABLE log (seq INTEGER PRIMARY KEY, who TEXT UNIQUE)"))
    yield made
    made.dispose()


def write(engine: Engine, who: str) -> None:
    with engine.connect() as connection:
        connection.execute(INSERT, {"who": who})
        connection.commit()


def order(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT who FROM log ORDER BY seq")).scalars())


def wait_until(condition: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the writers never queued"
        time.sleep(0.005)


def start(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target)
    thread.start()
    return thread


class TestSqliteWriteQueue:
    def test_writers_go_in_arrival_order_and_an_interactive_one_first(self, engine: Engine) -> None:
        queue = sqlite_write_queue(engine)
        assert queue is not None
        holder = engine.connect()
        holder.execute(INSERT, {"who": "holder"})  # holds SQLite's write lock and the ticket
        threads = []
        for number in range(4):
            threads.append(start(lambda who=f"background-{number}": write(engine, who)))
            wait_until(lambda count=number + 1: queue.waiting == count)

        def interactive() -> None:
            with interactive_writes():
                write(engine, "interactive")

        threads.append(start(interactive))
        wait_until(lambda: queue.waiting == 5)
        holder.commit()
        holder.close()
        for thread in threads:
            thread.join(timeout=10)

        assert order(engine) == [
            "holder",
            "interactive",
            "background-0",
            "background-1",
            "background-2",
            "background-3",
        ]
        assert not queue.held
        assert queue.waiting == 0

    def test_readers_never_queue(self, engine: Engine) -> None:
        holder = engine.connect()
        holder.execute(INSERT, {"who": "holder"})
        started = time.perf_counter()
        with engine.connect() as reader:
            assert reader.execute(text("SELECT count(*) FROM log")).scalar() == 0
        holder.rollback()
        holder.close()
        assert time.perf_counter() - started < 1.0

    def test_no_turn_within_the_busy_timeout_is_database_is_locked_and_leaks_nothing(
        self, make_settings, tmp_path: Path
    ) -> None:
        engine = create_db_engine(
            make_settings(database_url=f"sqlite:///{tmp_path / 'q.db'}", sqlite_busy_timeout_ms=200)
        )
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE log (seq INTEGER PRIMARY KEY, who TEXT)"))
        queue = sqlite_write_queue(engine)
        assert queue is not None
        holder = engine.connect()
        holder.execute(INSERT, {"who": "holder"})
        started = time.perf_counter()
        with pytest.raises(OperationalError, match="database is locked"):
            write(engine, "late")
        assert 0.15 < time.perf_counter() - started < 2.0
        assert queue.waiting == 0  # the one that gave up left the queue
        holder.commit()
        holder.close()
        write(engine, "after")  # the ticket came back: no wait
        assert order(engine) == ["holder", "after"]
        assert not queue.held
        engine.dispose()

    def test_a_rolled_back_or_failed_write_gives_its_turn_back(self, engine: Engine) -> None:
        queue = sqlite_write_queue(engine)
        assert queue is not None
        with engine.connect() as connection:
            connection.execute(INSERT, {"who": "rolled-back"})
            connection.rollback()
        assert not queue.held
        write(engine, "first")
        with pytest.raises(IntegrityError):
            write(engine, "first")  # UNIQUE: the statement fails, the connection goes back
        assert not queue.held
        with engine.connect() as connection:  # never closed cleanly: dropped, then collected
            connection.execute(INSERT, {"who": "abandoned"})
            connection.invalidate()
        assert not queue.held
        write(engine, "second")
        assert order(engine) == ["first", "second"]

    def test_postgresql_engines_have_no_queue(self, make_settings) -> None:
        engine = create_db_engine(make_settings(database_url="postgresql://u:p@127.0.0.1:1/x"))
        assert sqlite_write_queue(engine) is None
        engine.dispose()
