"""A synchronous run's result is stored ahead of background writers queued for SQLite.

The real service (pool, real engine) on SQLite: the test holds SQLite's write lock, queues
background writes behind it, then runs `print('hello')`; when the lock is let go the run's job
must be the first write to land (every background write sees it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from app.core.db import sqlite_write_queue
from tests.core.test_sqlite_write_queue import start, wait_until
from tests.jobs.helpers import app_settings, headers_for, running_app

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with running_app(app_settings(tmp_path_factory.mktemp("priority"))) as test_client:
        yield test_client


def test_a_sync_runs_job_lands_before_queued_background_writes(client: TestClient) -> None:
    engine: Engine = client.app.state.db_engine
    queue = sqlite_write_queue(engine)
    assert queue is not None
    user = headers_for(client)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE background (who INTEGER, jobs_seen INTEGER)"))
    insert = text("INSERT INTO background VALUES (:who, (SELECT count(*) FROM jobs))")

    def background(who: int) -> None:
        with engine.connect() as connection:
            connection.execute(insert, {"who": who})
            connection.commit()

    holder = engine.connect()
    holder.execute(insert, {"who": -1})
    threads = []
    for who in range(3):
        threads.append(start(lambda who=who: background(who)))
        wait_until(lambda count=who + 1: queue.waiting == count)
    answers: list = []
    run = start(
        lambda: answers.append(
            client.post("/api/v1/code/execute", json={"code": "print('hello')"}, headers=user)
        )
    )
    # the run happened; its job waits behind the three
    wait_until(lambda: queue.waiting == 4, limit_s=20.0)
    holder.commit()
    holder.close()
    for thread in [*threads, run]:
        thread.join(timeout=30)

    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["output"] == "hello\n"
    with engine.connect() as connection:
        seen = dict(connection.execute(text("SELECT who, jobs_seen FROM background")).all())
    assert seen == {-1: 0, 0: 1, 1: 1, 2: 1}
