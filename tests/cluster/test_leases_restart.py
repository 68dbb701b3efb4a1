"""A node restarted after SIGKILL (same NODE_ID, real processes, one real PostgreSQL) fails the job
it had started, at once and with the restart reason, and touches nothing of the other node's: the
other node's running job keeps running until a cancel sent through the restarted node stops it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from app.jobs.models import Job
from app.jobs.repository import RESTART_REASON
from tests.cluster.nodes import Node, start_node, stop, token_for, wait_ready
from tests.databases import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.docker]

# One worker per node (two sleepers land on two nodes), and a lease far longer than a restart:
# only the restarted node itself may end its job here.
SETTINGS = {"JOB_WORKERS": "1", "LEASE_TTL_S": "300", "RUN_MAX_TIMEOUT_S": "300"}
SLEEPER = {"language": "bash", "code": "sleep 200", "timeout": 250}


@pytest.fixture
def database(postgres_server: PostgresServer, postgres_template: str) -> Iterator[str]:
    url = postgres_server.create("warmbox_restart", template_url=postgres_template)
    yield url
    postgres_server.drop(url)


@pytest.fixture
def nodes(database: str, tmp_path: Path) -> Iterator[list[Node]]:
    started = [start_node(f"node{n}", database, tmp_path, SETTINGS) for n in (1, 2)]
    try:
        for node in started:
            wait_ready(node)
        yield started
    finally:
        for node in started:
            stop(node)


def job_rows(database: str) -> dict[str, Any]:
    engine = create_engine(database)
    with engine.connect() as connection:
        rows = {row.id: row for row in connection.execute(select(Job))}
    engine.dispose()
    return rows


def wait_for(check: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_restarted_node_fails_only_its_own_started_job(
    nodes: list[Node], database: str, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {token_for(database, tmp_path)}"}
    for node in nodes:
        answer = httpx.post(f"{node.url}/api/v1/jobs", json=SLEEPER, headers=headers, timeout=30)
        assert answer.status_code == 202, answer.text
    wait_for(lambda: {r.status for r in job_rows(database).values()} == {"running"})
    owner_of = {row.lease_owner: job_id for job_id, row in job_rows(database).items()}
    assert set(owner_of) == {"node1", "node2"}  # one worker each: one sleeper each

    restarted, other = nodes[1], nodes[0]
    restarted.process.kill()
    restarted.process.wait()  # its sandboxes are removed by the next start (dead pid)
    nodes[1] = restarted = start_node("node2", database, tmp_path, SETTINGS)
    wait_ready(restarted)

    rows = job_rows(database)
    mine, theirs = rows[owner_of["node2"]], rows[owner_of["node1"]]
    assert (mine.status, mine.stderr, mine.lease_owner) == ("failed", RESTART_REASON, None)
    assert (theirs.status, theirs.lease_owner) == ("running", "node1")

    # A cancel through the restarted node reaches the node running the job.
    answer = httpx.post(
        f"{restarted.url}/api/v1/jobs/{theirs.id}/cancel", headers=headers, timeout=30
    )
    assert answer.status_code == 200, answer.text
    wait_for(lambda: job_rows(database)[theirs.id].status == "cancelled", timeout_s=15)
    assert other.process.poll() is None
