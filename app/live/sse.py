"""Server-Sent Events of a job or a submission: replay after Last-Event-ID, then follow live.

A submission's stream has `status`, one `case` per graded case (its verdict, time, memory, exit
code and output as GET shows them) and the last `result`, with the same replay rules as a job's.

Events: `status` ({"status"}), `stdout` and `stderr` (text, as the program wrote it), and a last
`result` (the job as GET /jobs/{id} shows it); every `data` is JSON. Ids count up within the
job. A reconnect with `Last-Event-ID` gets exactly the events after it while the log still holds
the job; once the log has dropped a finished job (EVENTS_RETENTION_S), or when this node never
saw it run, the ending comes from the database: the final `status` and the `result` (which holds
the whole output). A job still queued gets one `status` without an id.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio

from app.events.log import EventLog
from app.jobs.models import JobStatus

KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
UNSEEN_POLL_S = 1.0  # how often the database is asked about a job the log does not hold
RETRY_MS = 1000

JobLoader = Callable[[], dict[str, Any] | None]


def event_bytes(kind: str, data: Any, event_id: int | None = None) -> bytes:
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines += [f"event: {kind}", "data: " + json.dumps(data, separators=(",", ":"))]
    return ("\n".join(lines) + "\n\n").encode()


async def job_events(
    log: EventLog, job_id: str, *, after: int, load_job: JobLoader
) -> AsyncIterator[bytes]:
    """The SSE body for one job; ends after its `result`.

    `load_job` (blocking, run in a worker thread) returns the stored job as GET /jobs/{id} shows
    it, or None once it is gone.
    """
    async for chunk in resource_events(
        log,
        "job",
        job_id,
        after=after,
        load=load_job,
        is_final=lambda status: JobStatus(status).is_final,
        queued=JobStatus.QUEUED.value,
    ):
        yield chunk


async def resource_events(
    log: EventLog,
    resource: str,
    resource_id: str,
    *,
    after: int,
    load: JobLoader,
    is_final: Callable[[str], bool],
    queued: str,
) -> AsyncIterator[bytes]:
    """The SSE body for one resource (a job, a submission); ends after its `result`.

    `load` (blocking, run in a worker thread) returns the stored resource as its GET shows it
    (with a `status`), or None once it is gone.
    """
    yield f"retry: {RETRY_MS}\n\n".encode()
    said_queued = False
    checked_at = time.monotonic()
    while True:
        replay = log.replay(resource, resource_id, after)
        for event in replay.events:
            yield event_bytes(event.kind, event.data, event.id)
            after = event.id
        if replay.finished:
            return
        if not replay.known or time.monotonic() - checked_at >= KEEPALIVE_S:
            checked_at = time.monotonic()
            stored = await anyio.to_thread.run_sync(load)
            if stored is None:
                return
            if is_final(stored["status"]) and not await _log_will_end(
                log, resource, resource_id, after
            ):
                yield event_bytes("status", {"status": stored["status"]}, after + 1)
                yield event_bytes("result", stored, after + 2)
                return
            if stored["status"] == queued and not said_queued:
                said_queued = True
                yield event_bytes("status", {"status": stored["status"]})
        waited_from = time.monotonic()
        timeout = KEEPALIVE_S if replay.known else UNSEEN_POLL_S
        await log.wait(resource, resource_id, after, timeout)
        if replay.known and time.monotonic() - waited_from >= timeout:
            yield b": keepalive\n\n"


async def _log_will_end(log: EventLog, resource: str, resource_id: str, after: int) -> bool:
    """The database says it ended: does the log hold (or get within a second) its end?"""
    replay = log.replay(resource, resource_id, after)
    if replay.known and not replay.finished:
        await log.wait(resource, resource_id, after, 1.0)
        replay = log.replay(resource, resource_id, after)
    return replay.known and (replay.finished or bool(replay.events))
