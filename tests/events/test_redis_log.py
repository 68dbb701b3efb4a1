"""The event log in Redis (cluster mode), against the real Redis that scripts/services.sh starts:
what one node publishes, another node's followers read with the same ids, bounds and wake-ups.
Each "node" is its own RedisEventLog, as each process has one."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from app.events.log import MIN_BYTES_PER_EVENT, MIN_EVENTS_PER_KIND, Replay
from app.events.redis_log import RedisEventLog

pytestmark = pytest.mark.redis


@pytest.fixture
def nodes(redis_url: str) -> Iterator[tuple[RedisEventLog, RedisEventLog]]:
    namespace = f"warmbox-test-{uuid.uuid4().hex[:12]}"  # reruns never see each other's keys
    a = RedisEventLog(redis_url, namespace=namespace, retention_s=1)
    b = RedisEventLog(redis_url, namespace=namespace, retention_s=1)
    yield a, b
    a.close()
    b.close()


def read(log: RedisEventLog, resource_id: str, after: int = 0) -> Replay:
    """What a follower on `log`'s node sees: its wait copies the stream, replay reads the copy."""
    asyncio.run(log.wait("job", resource_id, after, 0))
    return log.replay("job", resource_id, after)


def test_a_stream_published_on_one_node_is_read_on_another_with_its_ids(nodes) -> None:
    a, b = nodes
    a.open("job", "j1", output_limit=1000)
    a.publish("job", "j1", "status", {"status": "running"})
    a.publish("job", "j1", "stdout", "one\n")
    assert not read(b, "j1").finished
    a.finish("job", "j1", "result", {"output": "one\n"})
    a.publish("job", "j1", "stdout", "after the end\n")  # ignored: the stream is finished
    replay = read(b, "j1")
    assert [(e.id, e.kind, e.data) for e in replay.events] == [
        (1, "status", {"status": "running"}),
        (2, "stdout", "one\n"),
        (3, "result", {"output": "one\n"}),
    ]
    assert replay.finished
    assert [e.id for e in read(b, "j1", 2).events] == [3]
    assert not read(b, "never-opened").known


def test_output_beyond_the_limit_is_dropped_per_kind(nodes) -> None:
    a, b = nodes
    a.open("job", "j2", output_limit=10)
    for _ in range(5):
        a.publish("job", "j2", "stdout", "abcd")
        a.publish("job", "j2", "stderr", "é" * 4)  # 8 bytes each
    events = read(b, "j2").events
    assert len("".join(e.data for e in events if e.kind == "stdout").encode()) == 10
    assert len("".join(e.data for e in events if e.kind == "stderr").encode()) <= 10


def test_unread_output_is_merged_and_read_output_never_changes(nodes) -> None:
    a, b = nodes
    a.open("job", "j3", output_limit=10_000)
    for _ in range(100):
        a.publish("job", "j3", "stdout", "x")
    (merged,) = read(b, "j3").events
    assert merged.data == "x" * 100
    a.publish("job", "j3", "stdout", "y")
    assert [e.data for e in read(b, "j3").events] == ["x" * 100, "y"]
    assert [e.data for e in read(a, "j3").events] == ["x" * 100, "y"]  # every node sees the same


def test_a_stream_holds_a_bounded_number_of_output_events(nodes) -> None:
    a, b = nodes
    limit = MIN_EVENTS_PER_KIND * MIN_BYTES_PER_EVENT  # room for 1,024 bytes, 64 events
    a.open("job", "j4", output_limit=limit)
    for _ in range(limit // 8):
        a.publish("job", "j4", "stdout", "z")
        read(b, "j4")  # a reader keeps up: nothing is merged
    assert len(read(b, "j4").events) == MIN_EVENTS_PER_KIND


def test_a_follower_on_another_node_is_woken_by_a_publishing_thread(nodes) -> None:
    a, b = nodes
    a.open("job", "j5", output_limit=100)
    read(b, "j5")

    async def follow() -> float:
        started = time.monotonic()
        await b.wait("job", "j5", 0, timeout_s=5.0)
        return time.monotonic() - started

    threading.Timer(0.3, a.publish, args=("job", "j5", "stdout", "hi")).start()
    waited = asyncio.run(follow())
    assert 0.2 < waited < 2.0
    assert b.replay("job", "j5", 0).events[0].data == "hi"


def test_a_follower_of_a_job_not_started_yet_is_woken_when_it_opens(nodes) -> None:
    a, b = nodes

    async def follow() -> float:
        started = time.monotonic()
        await b.wait("job", "later", 0, timeout_s=5.0)
        return time.monotonic() - started

    threading.Timer(0.3, a.open, args=("job", "later"), kwargs={"output_limit": 10}).start()
    assert asyncio.run(follow()) < 2.0
    assert b.replay("job", "later", 0).known


def test_a_restarted_stream_replaces_what_followers_held(nodes) -> None:
    a, b = nodes
    a.open("job", "j6", output_limit=100)
    a.publish("job", "j6", "stdout", "first attempt")
    a.publish("job", "j6", "status", {"status": "running"})
    assert len(read(b, "j6").events) == 2
    a.open("job", "j6", output_limit=100)  # run again (e.g. recovered by another node)
    a.publish("job", "j6", "stdout", "second attempt")
    assert [e.data for e in read(b, "j6").events] == ["second attempt"]


def test_a_finished_stream_expires_after_its_retention(nodes) -> None:
    a, b = nodes
    a.open("job", "j7", output_limit=100)
    a.finish("job", "j7", "result", {})
    assert read(b, "j7").known
    time.sleep(2.2)  # retention 1 s; Redis expires keys to the second
    assert not read(b, "j7").known


def test_an_unreachable_redis_pauses_live_events_without_stalling_the_run() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = RedisEventLog(f"redis://127.0.0.1:{port}/0", namespace="warmbox-test-down")
    try:
        started = time.monotonic()
        log.open("job", "j8", output_limit=100)
        for _ in range(50):
            log.publish("job", "j8", "stdout", "line\n")
        log.finish("job", "j8", "result", {})
        assert time.monotonic() - started < 2, "a dead Redis must not stall every publish"
        assert not read(log, "j8").known  # followers fall back to the database's ending
    finally:
        log.close()
