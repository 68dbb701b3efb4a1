"""The in-memory event log: order and ids, replay after an id, waking followers, and the bounds
that keep a stream's memory within the run's output limit."""

from __future__ import annotations

import asyncio
import threading
import time

from app.events.log import MIN_BYTES_PER_EVENT, MIN_EVENTS_PER_KIND, InMemoryEventLog


def test_events_come_back_in_order_after_an_id() -> None:
    log = InMemoryEventLog()
    log.open("job", "a", output_limit=1000)
    log.publish("job", "a", "status", {"status": "running"})
    log.publish("job", "a", "stdout", "one\n")
    log.finish("job", "a", "result", {"output": "one\n"})
    replay = log.replay("job", "a", 0)
    assert [(e.id, e.kind) for e in replay.events] == [(1, "status"), (2, "stdout"), (3, "result")]
    assert replay.finished
    assert [e.id for e in log.replay("job", "a", 2).events] == [3]
    assert not log.replay("job", "b", 0).known


def test_output_beyond_the_limit_is_dropped_per_kind() -> None:
    log = InMemoryEventLog()
    log.open("job", "a", output_limit=10)
    for _ in range(5):
        log.publish("job", "a", "stdout", "abcd")
        log.publish("job", "a", "stderr", "é" * 4)  # 8 bytes each
    events = log.replay("job", "a", 0).events
    assert len("".join(e.data for e in events if e.kind == "stdout").encode()) == 10
    assert len("".join(e.data for e in events if e.kind == "stderr").encode()) <= 10


def test_unread_output_is_merged_and_read_output_never_changes() -> None:
    log = InMemoryEventLog()
    log.open("job", "a", output_limit=10_000)
    for _ in range(100):
        log.publish("job", "a", "stdout", "x")
    (merged,) = log.replay("job", "a", 0).events
    assert merged.data == "x" * 100
    log.publish("job", "a", "stdout", "y")
    assert [e.data for e in log.replay("job", "a", 0).events] == ["x" * 100, "y"]


def test_a_stream_holds_a_bounded_number_of_output_events() -> None:
    log = InMemoryEventLog()
    limit = MIN_EVENTS_PER_KIND * MIN_BYTES_PER_EVENT  # room for 1,024 bytes, 64 events
    log.open("job", "a", output_limit=limit)
    after = 0
    for _ in range(limit // 2):
        log.publish("job", "a", "stdout", "z")
        events = log.replay("job", "a", after).events  # a reader keeps up: nothing is merged
        after = events[-1].id if events else after
    assert len(log.replay("job", "a", 0).events) == MIN_EVENTS_PER_KIND


def test_finished_streams_are_dropped_after_retention_or_beyond_the_cap() -> None:
    log = InMemoryEventLog(retention_s=0.05, max_finished=2)
    for name in "abc":
        log.open("job", name, output_limit=10)
        log.finish("job", name, "result", {})
    log.open("job", "d", output_limit=10)
    assert not log.replay("job", "a", 0).known  # beyond the cap
    time.sleep(0.1)
    log.open("job", "e", output_limit=10)
    assert not log.replay("job", "c", 0).known  # past retention
    assert log.replay("job", "d", 0).known  # not finished: kept


def test_a_follower_is_woken_by_a_publishing_thread() -> None:
    log = InMemoryEventLog()
    log.open("job", "a", output_limit=100)

    async def follow() -> float:
        started = time.monotonic()
        await log.wait("job", "a", 0, timeout_s=5.0)
        return time.monotonic() - started

    threading.Timer(0.1, log.publish, args=("job", "a", "stdout", "hi")).start()
    waited = asyncio.run(follow())
    assert 0.05 < waited < 2.0
    assert log.replay("job", "a", 0).events[0].data == "hi"


def test_a_follower_of_a_job_not_started_yet_is_woken_when_it_opens() -> None:
    log = InMemoryEventLog()

    async def follow() -> float:
        started = time.monotonic()
        await log.wait("job", "later", 0, timeout_s=5.0)
        return time.monotonic() - started

    threading.Timer(0.1, log.open, args=("job", "later"), kwargs={"output_limit": 10}).start()
    assert asyncio.run(follow()) < 2.0
