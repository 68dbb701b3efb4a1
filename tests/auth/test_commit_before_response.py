"""Every write is committed before its response leaves; a commit that fails is an error response."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from app.core.db import create_db_engine
from tests.auth.helpers import DEFAULT_PASSWORD
from tests.auth.live_server import live_server

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"

# Fires at COMMIT, not at INSERT: the flush succeeds and only the commit fails, as a
# serialization failure or a deferred constraint does in a real deployment.
_FAIL_AT_COMMIT = """
CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'serialization_failure';
END $$;
CREATE CONSTRAINT TRIGGER users_refuse_at_commit AFTER INSERT ON users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();
"""


@pytest.mark.postgres
def test_a_failed_commit_is_an_error_response_and_nothing_is_stored(
    postgres_database_url: str, make_settings: Callable, make_client: Callable
) -> None:
    settings = make_settings(database_url=postgres_database_url)
    with make_client(settings) as client:
        engine = create_db_engine(settings)
        with engine.begin() as connection:
            connection.execute(text(_FAIL_AT_COMMIT))
        response = client.post(REGISTER, json={"username": "alice", "password": DEFAULT_PASSWORD})
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM users")).scalar_one()
        engine.dispose()

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert stored == 0


@pytest.mark.slow
def test_a_new_account_signs_in_at_once_on_a_real_server(tmp_path: Path) -> None:
    with (
        live_server(tmp_path) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as http,
    ):
        answers = []
        for number in range(20):
            credentials = {"username": f"fresh{number}", "password": DEFAULT_PASSWORD}
            assert http.post(REGISTER, json=credentials).status_code == 201
            answers.append(http.post(LOGIN, json=credentials).status_code)

    assert answers == [200] * 20
