"""Three real warmbox nodes (`python -m app.serve`, real Docker sandboxes) on one real PostgreSQL
database: a few hundred jobs and submissions are spread over them, one node is killed with
SIGKILL in the middle, and then every acknowledged item ends: what the dead node had started fails
with the lease reason within the lease + grace, what it held queued runs on the others; none is
lost, none runs twice (a trigger in the test's database records every start), none is stuck. A
real HAProxy in front of the three (health check on /health/ready) marks the killed node DOWN
within seconds, and every request sent through it afterwards is acknowledged and run by the
living nodes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from app.jobs.models import Job
from app.jobs.repository import EXPIRED_REASON as JOB_EXPIRED
from app.submissions.models import Submission
from app.submissions.repository import EXPIRED_REASON as SUBMISSION_EXPIRED
from tests.cluster.balancer import Balancer, haproxy
from tests.cluster.nodes import LEASE_TTL_S, Node, start_node, stop, token_for, wait_ready
from tests.databases import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.docker]

GRACE_S = 6.0  # two poll rounds, a claim and a commit, on a loaded 2-core machine
JOBS = 150
SUBMISSIONS = 60
FINISH_TIMEOUT_S = 60.0
DOWN_WITHIN_S = 5.0  # two failed checks a second apart, on a loaded 2-core machine
AFTER_DOWN = 30  # jobs sent through the balancer once the dead node is DOWN

# Every queued -> running move of a job or submission, recorded by the database itself.
STARTS_SQL = """
CREATE TABLE test_starts (tbl text NOT NULL, id text NOT NULL, owner text);
CREATE FUNCTION test_record_start() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'running' AND OLD.status IS DISTINCT FROM 'running' THEN
        INSERT INTO test_starts VALUES (TG_TABLE_NAME, NEW.id, NEW.lease_owner);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER jobs_started AFTER UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION test_record_start();
CREATE TRIGGER submissions_started AFTER UPDATE ON submissions
    FOR EACH ROW EXECUTE FUNCTION test_record_start();
"""


@pytest.fixture
def database(postgres_server: PostgresServer, postgres_template: str) -> Iterator[str]:
    url = postgres_server.create("warmbox_failover", template_url=postgres_template)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text(STARTS_SQL))
    engine.dispose()
    yield url
    postgres_server.drop(url)


@pytest.fixture
def nodes(database: str, tmp_path: Path) -> Iterator[list[Node]]:
    started = [start_node(f"node{n}", database, tmp_path) for n in range(1, 4)]
    try:
        for node in started:
            wait_ready(node)
        yield started
    finally:
        for node in started:
            stop(node)


@pytest.fixture
def balancer(nodes: list[Node], tmp_path: Path) -> Iterator[Balancer]:
    with haproxy(nodes, tmp_path) as running:
        yield running


def sleeper() -> list[tuple[str, dict[str, Any], Any]]:
    """A long job: the node that starts it is the one killed, so it surely dies with started
    work it will never finish."""
    return [("sleeper", {"language": "bash", "code": "sleep 29", "timeout": 30}, "")]


def work() -> list[tuple[str, dict[str, Any], Any]]:
    bodies: list[tuple[str, dict[str, Any], Any]] = []
    for n in range(JOBS):
        code = f"echo job-{n}"
        bodies.append(("job", {"language": "bash", "code": code, "timeout": 10}, f"job-{n}\n"))
    for n in range(SUBMISSIONS):
        case = {"stdin": f"{n}\n", "expected_output": f"{2 * n}\n"}
        code = "read x; echo $((x * 2))"
        bodies.append(("submission", {"language": "bash", "code": code, "test_cases": [case]}, n))
    return bodies


def submit_all(
    nodes: list[Node],
    headers: dict[str, str],
    bodies: list[tuple[str, dict[str, Any], Any]],
    *,
    victim: Node | None = None,
    kill_at: int = 0,
    on_kill: Callable[[], None] = lambda: None,
) -> dict[str, tuple[str, Any]]:
    """Round robin over the nodes; {id: (kind, expected output)} of every acknowledged item.
    With a `victim`, it is killed (SIGKILL) once `kill_at` items are acknowledged, then
    `on_kill` runs: what the victim answers no more is not acknowledged."""

    def send(item: tuple[int, tuple[str, dict[str, Any], Any]]) -> tuple[str, tuple[str, Any]]:
        number, (kind, body, expected) = item
        node = nodes[number % len(nodes)]
        path = "/api/v1/submissions" if kind == "submission" else "/api/v1/jobs"
        try:
            answer = httpx.post(f"{node.url}{path}", json=body, headers=headers, timeout=30)
        except httpx.HTTPError:
            assert node is victim
            return "", (kind, expected)  # never acknowledged: the node died first
        assert answer.status_code == 202, answer.text
        data = answer.json()
        return data.get("submission_id") or data["job_id"], (kind, expected)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(send, item) for item in enumerate(bodies)]
        while victim is not None and sum(f.done() for f in futures) < kill_at:
            time.sleep(0.02)
        if victim is not None:
            victim.process.kill()  # SIGKILL: no shutdown, no lease given back
            victim.process.wait()
            on_kill()
        answered = dict(future.result() for future in futures)
    answered.pop("", None)
    return answered


def running_on(database: str, owner: str | None = None) -> dict[str, str]:
    """{id: node} of the running jobs and submissions (of `owner` only, when given)."""
    engine = create_engine(database)
    with engine.connect() as connection:
        found = {
            row_id: node
            for table in (Job, Submission)
            for row_id, node in connection.execute(
                select(table.id, table.lease_owner).where(table.status == "running")
            )
            if owner is None or node == owner
        }
    engine.dispose()
    return found


def wait_running(database: str, item_id: str) -> str:
    """The node that started `item_id`."""
    deadline = time.monotonic() + 30
    while (node := running_on(database).get(item_id)) is None:
        assert time.monotonic() < deadline, "the sleeper never started"
        time.sleep(0.05)
    return node


def final_states(database: str) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    engine = create_engine(database)
    with engine.connect() as connection:
        jobs = {row.id: row for row in connection.execute(select(Job))}
        submissions = {row.id: row for row in connection.execute(select(Submission))}
        starts = list(connection.execute(text("SELECT tbl, id, owner FROM test_starts")))
    engine.dispose()
    return jobs, submissions, starts


def wait_all_final(database: str, ids: set[str], *, timeout_s: float) -> float:
    """Seconds until every one of `ids` is final (fails the test at the timeout)."""
    started = time.monotonic()
    while True:
        jobs, submissions, _ = final_states(database)
        rows = {**jobs, **submissions}
        open_ids = {i for i in ids if rows[i].status in ("queued", "running")}
        if not open_ids:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{len(open_ids)} items still open, e.g. {sorted(open_ids)[:5]}")
        time.sleep(0.2)


def test_a_node_killed_mid_way_loses_nothing_and_runs_nothing_twice(
    nodes: list[Node], balancer: Balancer, database: str, tmp_path: Path
) -> None:
    headers = {"Authorization": f"Bearer {token_for(database, tmp_path)}"}
    accepted = submit_all(nodes, headers, sleeper())
    (sleeper_id,) = accepted
    victim = next(node for node in nodes if node.name == wait_running(database, sleeper_id))
    orphaned: set[str] = set()
    recovered_s: list[float] = []
    killed_at: list[float] = []
    down_s: list[float] = []

    def killed() -> None:
        killed_at.append(time.monotonic())
        orphaned.update(running_on(database, victim.name))  # started there, never to end there
        balancer.wait_for(victim.name, "DOWN", timeout_s=DOWN_WITHIN_S)
        since_kill = time.monotonic() - killed_at[0]
        down_s.append(since_kill)
        left = LEASE_TTL_S + GRACE_S - since_kill  # the bound counts from the kill
        recovered_s.append(since_kill + wait_all_final(database, orphaned, timeout_s=left))

    third = (JOBS + SUBMISSIONS) // 3
    accepted |= submit_all(nodes, headers, work(), victim=victim, kill_at=third, on_kill=killed)
    assert sleeper_id in orphaned
    jobs, submissions, _ = final_states(database)
    # Also what the victim committed but could not acknowledge before it died: nothing stuck.
    every_row = set(jobs) | set(submissions)
    assert set(accepted) <= every_row
    wait_all_final(database, every_row, timeout_s=FINISH_TIMEOUT_S)
    all_done_s = time.monotonic() - killed_at[0]
    jobs, submissions, starts = final_states(database)

    started = [row_id for _table, row_id, _owner in starts]
    assert len(started) == len(set(started)), "an item was started twice"
    for item_id, (kind, expected) in accepted.items():
        if item_id in orphaned:
            row = jobs.get(item_id) or submissions[item_id]
            reason = row.stderr if item_id in jobs else row.error
            expired = JOB_EXPIRED if item_id in jobs else SUBMISSION_EXPIRED
            assert (row.status, reason) == ("failed", expired), item_id
        elif kind == "submission":
            row = submissions[item_id]
            assert (row.status, row.verdict) == ("finished", "accepted"), item_id
        else:
            row = jobs[item_id]
            assert (row.status, row.stdout) == ("succeeded", expected), item_id
        assert row.lease_owner is None  # nothing final keeps a lease
    owners = {owner for _table, _row_id, owner in starts}
    assert owners == {node.name for node in nodes}  # the work was spread over all three

    # The balancer sends nothing more to the dead node: every request is acknowledged, and
    # the living nodes run it all.
    through = [
        httpx.post(
            f"{balancer.url}/api/v1/jobs",
            json={"language": "bash", "code": f"echo after-{n}", "timeout": 10},
            headers=headers,
            timeout=30,
        )
        for n in range(AFTER_DOWN)
    ]
    assert [answer.status_code for answer in through] == [202] * AFTER_DOWN
    after = {answer.json()["job_id"] for answer in through}
    wait_all_final(database, after, timeout_s=FINISH_TIMEOUT_S)
    jobs, _submissions, starts = final_states(database)
    assert {jobs[job_id].status for job_id in after} == {"succeeded"}
    assert victim.name not in {owner for _table, row_id, owner in starts if row_id in after}
    print(  # the figures the report quotes (pytest -s)
        f"\nfailover: {len(accepted)} items, {len(orphaned)} started on the killed node failed "
        f"{recovered_s[0]:.1f} s after the kill (lease {LEASE_TTL_S} s), all final "
        f"{all_done_s:.1f} s after it; HAProxy marked it DOWN {down_s[0]:.2f} s after the kill"
    )
