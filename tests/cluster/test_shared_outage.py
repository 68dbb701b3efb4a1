"""Redis stopped briefly under two real nodes: they go on serving as the README's "When Redis is
briefly unreachable" says, and count across nodes again once it answers.

Stopped with SIGSTOP, so Redis hangs (accepts connections, never answers) rather than refusing
them at once: the slower failure, where every caller would wait for its timeout if the nodes did
not remember that Redis is down.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.cluster.shared_nodes import Cluster, Node, sse_events, two_nodes
from tests.databases import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.docker]

RETRY_AFTER_S = 5.0  # STORAGE_RETRY_AFTER_S of the rate limits, the shares and the event log
SLEEPER = {"code": "import time; time.sleep(4)", "language": "python", "timeout": 10}
HELLO = {"code": "print('hello')", "language": "python"}
PRINTS = {
    "code": "import time\nfor n in range(4):\n    print('line', n, flush=True); time.sleep(0.4)",
    "language": "python",
    "timeout": 15,
}


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    postgres_template: str,
) -> Iterator[Cluster]:
    with two_nodes(
        tmp_path_factory.mktemp("outage"),
        postgres_server,
        postgres_template,
        MAX_CONCURRENT_RUNS_PER_USER="1",
    ) as nodes:
        yield nodes


def running_job(node: Node, token: str) -> str:
    """A 4 s job of the user's, started on `node`; its path."""
    answer = node.request("POST", "/api/v1/jobs", token, json=SLEEPER)
    assert answer.status_code == 202, answer.text
    path = f"/api/v1/jobs/{answer.json()['job_id']}"
    deadline = time.monotonic() + 20
    while node.request("GET", path, token).json()["status"] != "running":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.25)
    return path


def followed_job(runner: Node, follower: Node, token: str) -> list[dict]:
    """A job that prints four lines, run through `runner`, its events as `follower` streams them."""
    answer = runner.request("POST", "/api/v1/jobs", token, json=PRINTS)
    assert answer.status_code == 202, answer.text
    return sse_events(follower, f"/api/v1/jobs/{answer.json()['job_id']}/events", token)


def test_a_brief_redis_outage_degrades_to_each_nodes_own_count_and_heals(cluster: Cluster) -> None:
    token = cluster.user()
    process = cluster.redis.process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        # Requests are served: rate limits count in each node's memory, after one timeout.
        started = time.monotonic()
        for node in (cluster.a, cluster.b, cluster.a, cluster.b):
            assert node.request("GET", "/api/version", token).status_code == 200
        assert time.monotonic() - started < 6, "each request paid Redis' timeout"
        # Shares fail open to each node's own count: one run per node, not one in all. The job
        # is submitted to b, but whichever node has room may claim it (work leases), so the node
        # that runs it refuses the user's second run and the other one serves it.
        held = running_job(cluster.b, token)
        answers = [
            node.request("POST", "/api/v1/code/execute", token, json=HELLO)
            for node in (cluster.a, cluster.b)
        ]
        assert sorted(answer.status_code for answer in answers) == [200, 429], [
            answer.text for answer in answers
        ]
        served = next(answer for answer in answers if answer.status_code == 200)
        assert served.json()["output"] == "hello\n"
        # Live events pause; a follower on the other node still gets the ending, from the database.
        events = followed_job(cluster.b, cluster.a, token)
        assert [e["event"] for e in events if "id" in e][-2:] == ["status", "result"]
        assert events[-1]["data"]["output"] == "".join(f"line {n}\n" for n in range(4))
        while cluster.b.request("GET", held, token).json()["status"] == "running":
            time.sleep(0.25)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    time.sleep(RETRY_AFTER_S + 1)  # every part asks Redis again after this
    # Shared again: a run on b counts against the user on a,
    running_job(cluster.b, token)
    refused = cluster.a.request("POST", "/api/v1/code/execute", token, json=HELLO)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "QUOTA_EXCEEDED"
    # and a follower on a sees the output of a job on b live again.
    kinds = [event["event"] for event in followed_job(cluster.b, cluster.a, cluster.user())]
    assert kinds.count("stdout") >= 1, kinds
    assert kinds[-1] == "result", kinds
