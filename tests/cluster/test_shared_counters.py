"""Two real nodes on one PostgreSQL and one Redis count once what they share: a caller's rate limit,
a user's share of the sandboxes, and the live events of a job, which a follower on either node
sees as the job prints, whichever node runs it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.cluster.shared_nodes import Cluster, sse_events, two_nodes
from tests.databases import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.docker]

VERSION = "/api/version"
DEFAULT_LIMIT = 40
SLOW_PRINTS = (
    "import time\ntime.sleep(1.5)\nfor n in range(5):\n    print('line', n, flush=True)\n"
    "    time.sleep(0.4)\n"
)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    postgres_template: str,
) -> Iterator[Cluster]:
    with two_nodes(
        tmp_path_factory.mktemp("shared"),
        postgres_server,
        postgres_template,
        RATE_LIMIT_DEFAULT=f"{DEFAULT_LIMIT}/minute",
        MAX_CONCURRENT_RUNS_PER_USER="1",
    ) as nodes:
        yield nodes


def test_a_callers_rate_limit_is_counted_once_across_nodes(cluster: Cluster) -> None:
    token = cluster.user()
    answers = [
        (node.name, node.request("GET", VERSION, token).status_code)
        for _ in range(DEFAULT_LIMIT)
        for node in (cluster.a, cluster.b)
    ]
    allowed = [answer for answer in answers if answer[1] == 200]
    assert len(allowed) == DEFAULT_LIMIT, answers  # not DEFAULT_LIMIT per node
    refused = cluster.b.request("GET", VERSION, token)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "RATE_LIMITED"
    assert int(refused.headers["Retry-After"]) >= 1


def test_a_users_run_share_is_counted_once_across_nodes(cluster: Cluster) -> None:
    token = cluster.user()
    body = {"code": "import time; time.sleep(4)", "language": "python", "timeout": 10}
    job = cluster.b.request("POST", "/api/v1/jobs", token, json=body)
    assert job.status_code == 202, job.text
    job_path = f"/api/v1/jobs/{job.json()['job_id']}"
    deadline = time.monotonic() + 20
    while cluster.b.request("GET", job_path, token).json()["status"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.25)
    hello = {"code": "print('hello')", "language": "python"}
    refused = cluster.a.request("POST", "/api/v1/code/execute", token, json=hello)
    assert refused.status_code == 429, refused.text  # the user's one run is on node b
    assert refused.json()["error"]["code"] == "QUOTA_EXCEEDED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 15
    other = cluster.a.request("POST", "/api/v1/code/execute", cluster.user(), json=hello)
    assert other.status_code == 200, other.text  # another user is not affected
    while cluster.b.request("GET", job_path, token).json()["status"] == "running":
        assert time.monotonic() < deadline + 10, "the job never ended"
        time.sleep(0.25)
    again = cluster.a.request("POST", "/api/v1/code/execute", token, json=hello)
    assert again.status_code == 200, again.text  # released on b, free on a
    assert again.json()["output"] == "hello\n"


def test_both_nodes_follow_a_job_live_whichever_node_runs_it(cluster: Cluster) -> None:
    token = cluster.user()
    body = {"code": SLOW_PRINTS, "language": "python", "timeout": 15}
    job = cluster.b.request("POST", "/api/v1/jobs", token, json=body)
    assert job.status_code == 202, job.text
    path = f"/api/v1/jobs/{job.json()['job_id']}/events"
    streams: dict[str, list[dict]] = {}
    followers = [
        threading.Thread(
            target=lambda n=node: streams.__setitem__(n.name, sse_events(n, path, token))
        )
        for node in (cluster.a, cluster.b)
    ]
    for follower in followers:
        follower.start()
    for follower in followers:
        follower.join(timeout=40)
    assert set(streams) == {"a", "b"}, "a follower never saw the job end"
    for name, events in streams.items():
        kinds = [event["event"] for event in events]
        output = "".join(event["data"] for event in events if event["event"] == "stdout")
        assert kinds[-1] == "result", (name, kinds)
        assert output == "".join(f"line {n}\n" for n in range(5)), (name, kinds)
        # Live: the lines arrived as they were printed (1.6 s from the first to the last; the
        # program waits 1.5 s first, so both followers are connected before line one).
        lines = [event["at"] for event in events if event["event"] == "stdout"]
        assert lines[-1] - lines[0] > 1.0, (name, kinds)
        ids = [int(event["id"]) for event in events if "id" in event]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)


def test_both_nodes_follow_a_submissions_cases_whichever_node_grades_it(cluster: Cluster) -> None:
    token = cluster.user()
    cases = [{"stdin": f"{n}\n", "expected_output": f"{n}\n"} for n in range(3)]
    body = {"language": "python", "code": "print(input())", "test_cases": cases}
    answer = cluster.b.request("POST", "/api/v1/submissions", token, json=body)
    assert answer.status_code == 202, answer.text
    path = f"/api/v1/submissions/{answer.json()['submission_id']}/events"
    streams: dict[str, list[dict]] = {}
    followers = [
        threading.Thread(
            target=lambda n=node: streams.__setitem__(n.name, sse_events(n, path, token))
        )
        for node in (cluster.a, cluster.b)
    ]
    for follower in followers:
        follower.start()
    for follower in followers:
        follower.join(timeout=40)
    assert set(streams) == {"a", "b"}, "a follower never saw the submission end"
    for name, events in streams.items():
        graded = [
            (e["data"]["number"], e["data"]["verdict"]) for e in events if e["event"] == "case"
        ]
        # The cases come from the event log (the database's ending has none): live on both nodes.
        assert graded == [(0, "accepted"), (1, "accepted"), (2, "accepted")], (name, events)
        assert events[-1]["event"] == "result"
