"""Run shares in Redis (cluster mode): one count per user across nodes, against the real Redis
that scripts/services.sh starts. Each "node" is its own RedisRunShares, as each process has one."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from app.jobs.shares_redis import RedisRunShares

pytestmark = pytest.mark.redis


@pytest.fixture
def nodes(redis_url: str) -> Iterator[tuple[RedisRunShares, RedisRunShares]]:
    namespace = f"warmbox-test-{uuid.uuid4().hex[:12]}"  # reruns never see each other's keys
    a = RedisRunShares(redis_url, 2, namespace=namespace, ticket_grace_s=0.2)
    b = RedisRunShares(redis_url, 2, namespace=namespace, ticket_grace_s=0.2)
    yield a, b
    a.close()
    b.close()


def test_a_users_runs_are_counted_once_across_nodes(nodes) -> None:
    a, b = nodes
    first = a.try_acquire("alice", run_timeout_s=30)
    second = b.try_acquire("alice", run_timeout_s=30)
    assert first is not None
    assert second is not None
    assert a.try_acquire("alice", run_timeout_s=30) is None
    assert b.try_acquire("alice", run_timeout_s=30) is None
    assert b.try_acquire("bob", run_timeout_s=30) is not None  # other users are not affected
    assert a.running("alice") == b.running("alice") == 2
    assert 25 <= b.seconds_until_free("alice") <= 31
    a.release(first)
    a.release(first)  # twice counts once
    assert b.running("alice") == 1
    assert b.try_acquire("alice", run_timeout_s=30) is not None


def test_a_release_on_one_node_wakes_the_others(nodes) -> None:
    a, b = nodes
    heard = threading.Event()
    b.on_release(lambda user_id: user_id == "carol" and heard.set())
    time.sleep(0.3)  # b's listener has subscribed
    ticket = a.try_acquire("carol", run_timeout_s=30)
    assert ticket is not None
    a.release(ticket)
    assert heard.wait(2), "node b never heard node a's release"


def test_the_tickets_of_a_node_that_died_lapse_when_their_runs_would_have_ended(nodes) -> None:
    a, b = nodes
    assert a.try_acquire("dave", run_timeout_s=0.3) is not None
    assert a.try_acquire("dave", run_timeout_s=0.3) is not None
    assert b.try_acquire("dave", run_timeout_s=0.3) is None
    # node a "dies": it never releases. Its runs would have ended after timeout + grace.
    time.sleep(0.7)
    assert b.try_acquire("dave", run_timeout_s=30) is not None


def test_an_unreachable_redis_fails_open_to_this_nodes_own_count() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    shares = RedisRunShares(f"redis://127.0.0.1:{port}/0", 2, ticket_grace_s=0.2)
    try:
        started = time.monotonic()
        first = shares.try_acquire("erin", run_timeout_s=30)
        second = shares.try_acquire("erin", run_timeout_s=30)
        assert first is not None
        assert second is not None
        assert shares.try_acquire("erin", run_timeout_s=30) is None  # the same limit, per node
        assert shares.running("erin") == 2
        shares.release(first)
        assert shares.try_acquire("erin", run_timeout_s=30) is not None
        assert time.monotonic() - started < 3, "a dead Redis must not stall every acquire"
    finally:
        shares.close()
