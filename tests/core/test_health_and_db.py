"""Liveness, readiness when the database is down or hangs, and the SQLite durability settings."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from app.core.db import UTCDateTime, create_db_engine


class TestLiveness:
    def test_health_answers_ok(self, client):
        assert client.get("/health").json()["status"] == "ok"

    def test_ready_is_healthy_with_a_database_latency(self, client):
        body = client.get("/health/ready").json()
        assert body["status"] == "healthy"
        assert body["checks"]["database"]["latency_ms"] >= 0


class TestDatabaseDown:
    """The database goes away under a running service: readiness says so, fast, never hangs."""

    def _closed_port(self) -> int:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        return port

    def _ready_with_database(self, client, url: str, make_settings):
        client.app.state.db_engine = create_db_engine(make_settings(database_url=url))
        started = time.monotonic()
        response = client.get("/health/ready")
        return response, time.monotonic() - started

    def test_refused_database_makes_ready_unhealthy(self, client, make_settings):
        url = f"postgresql+psycopg://u:p@127.0.0.1:{self._closed_port()}/db"
        response, _ = self._ready_with_database(client, url, make_settings)
        assert response.status_code == 503
        assert response.json()["status"] == "unhealthy"
        assert response.json()["checks"]["database"]["status"] == "unhealthy"
        assert client.get("/health").status_code == 200

    def test_hung_database_answers_unhealthy_within_the_deadline(
        self, client, make_settings, silent_server
    ):
        url = f"postgresql+psycopg://u:p@127.0.0.1:{silent_server}/db"
        response, elapsed = self._ready_with_database(client, url, make_settings)
        assert response.status_code == 503
        assert "no answer" in response.json()["checks"]["database"]["detail"]
        assert elapsed < 5


class TestSqlite:
    def test_pragmas_make_writes_durable_and_concurrent(self, make_settings):
        engine = create_db_engine(make_settings())
        with engine.connect() as connection:
            pragma = {
                name: connection.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }
        engine.dispose()
        assert pragma == {
            "journal_mode": "wal",
            "foreign_keys": 1,
            "synchronous": 2,  # FULL
            "busy_timeout": 5000,
        }

    def test_datetimes_come_back_aware_in_utc(self):
        column = UTCDateTime()
        local = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
        stored = column.process_bind_param(local, None)
        assert stored == datetime(2026, 1, 1, 10, tzinfo=UTC)
        assert column.process_result_value(datetime(2026, 1, 1, 10), None).tzinfo is UTC

    def test_naive_datetimes_are_refused(self):
        with pytest.raises(ValueError, match="naive"):
            UTCDateTime().process_bind_param(datetime(2026, 1, 1), None)


class TestDatabaseErrorsAreServiceUnavailable:
    def test_unreachable_database_on_a_request_is_503_with_retry_after(self, client, make_settings):
        from app.core.db import create_session_factory

        port = TestDatabaseDown()._closed_port()
        engine = create_db_engine(
            make_settings(database_url=f"postgresql+psycopg://u:p@127.0.0.1:{port}/db")
        )
        client.app.state.session_factory = create_session_factory(engine)
        response = client.post("/api/v1/auth/login", json={"username": "ann", "password": "x" * 12})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert response.headers["retry-after"] == "1"
