"""Queued jobs take `callback_url` and `metadata`: they are stored and returned, the finished
job is delivered to the callback (signed, its state on the job), and bad input is a 4xx naming
the field with nothing stored."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from app.auth.models import Role, User
from app.core.db import utcnow
from app.core.migrations import upgrade_to_head
from app.jobs.models import Job, JobStatus
from app.jobs.repository import RESTART_REASON
from tests.auth.helpers import access_token_for, auth_headers
from tests.jobs.helpers import (
    app_settings,
    headers_for,
    running_app,
    wait_for_final,
    wait_for_status,
)
from tests.webhooks.receiver import Receiver, receiver_on

pytestmark = pytest.mark.docker

WEBHOOKS = {
    "webhook_allowed_hosts": ["127.0.0.1/32"],
    "webhook_retry_base_s": 0.3,
    "webhook_timeout_s": 2.0,
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiver_on() as server:
        yield server


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, module_database_url: str
) -> Iterator[TestClient]:
    settings = app_settings(
        tmp_path_factory.mktemp("callbacks"), database_url=module_database_url, **WEBHOOKS
    )
    with running_app(settings) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def user(client: TestClient) -> dict[str, str]:
    return headers_for(client)


def wait_delivered(
    client: TestClient, job_id: str, headers: dict[str, str], timeout_s: float = 15.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        statuses = [delivery["status"] for delivery in job["deliveries"]]
        if statuses == ["delivered"] or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_a_finished_job_is_delivered_signed_with_its_metadata(
    client: TestClient, user: dict[str, str], receiver: Receiver
) -> None:
    metadata = {"lesson_id": "7", "exercise": "fizzbuzz"}
    body = {"code": "print(6 * 7)", "callback_url": receiver.url("/job"), "metadata": metadata}
    accepted = client.post("/api/v1/jobs", json=body, headers=user)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    job = wait_delivered(client, job_id, user)
    got = [received for received in receiver.received if job_id.encode() in received.body]
    secret = client.app.state.settings.webhook_secret  # type: ignore[attr-defined]

    assert job["callback_url"] == receiver.url("/job")
    assert job["metadata"] == metadata
    (delivery,) = job["deliveries"]
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200
    assert delivery["event"] == "job.finished"
    (received,) = got
    envelope = Webhook(secret).verify(received.body, received.headers)
    assert envelope["type"] == "job.finished"
    data = envelope["data"]
    assert (data["job_id"], data["status"], data["output"]) == (job_id, "succeeded", "42\n")
    assert data["metadata"] == metadata
    assert "deliveries" not in data
    listed = client.get("/api/v1/jobs", headers=user).json()["items"]
    assert next(item for item in listed if item["job_id"] == job_id)["metadata"] == metadata


def test_a_job_without_callback_has_no_delivery(client: TestClient, user: dict[str, str]) -> None:
    job_id = client.post("/api/v1/jobs", json={"code": "print(1)"}, headers=user).json()["job_id"]
    job = wait_for_final(client, job_id, user)
    assert (job["callback_url"], job["metadata"], job["deliveries"]) == (None, {}, [])


BAD_BODIES = [
    ({"callback_url": "ftp://127.0.0.1/x"}, "callback_url"),
    ({"callback_url": "http://127.0.0.2/x"}, "callback_url"),  # loopback, not allowed
    ({"callback_url": "http://10.0.0.1/x"}, "callback_url"),
    ({"callback_url": "http://169.254.169.254/latest/meta-data/"}, "callback_url"),
    ({"callback_url": "http://[::ffff:10.0.0.1]/x"}, "callback_url"),
    ({"callback_url": "http://100.64.0.1/x"}, "callback_url"),
    ({"callback_url": ""}, "callback_url"),
    ({"callback_url": 7}, "callback_url"),
    ({"metadata": {"a": {"nested": "x"}}}, "metadata"),
    ({"metadata": {"a": 1}}, "metadata"),
    ({"metadata": {"a": ["x"]}}, "metadata"),
    ({"metadata": ["a", "b"]}, "metadata"),
    ({"metadata": {f"k{n}": "v" for n in range(17)}}, "metadata"),
    ({"metadata": {"a": "x" * 257}}, "metadata"),
    ({"metadata": {"k" * 65: "x"}}, "metadata"),
    ({"metadata": {"no spaces": "x"}}, "metadata"),
    ({"metadata": {"a": "line\nbreak"}}, "metadata"),
    ({"metadata": {"a": "\ud800"}}, "metadata"),
]


def _names_field(answer: dict[str, Any], field: str) -> bool:
    details = answer["error"]["details"]
    if isinstance(details, dict):
        return details.get("field") == field
    return any(field in item["loc"] for item in details)


@pytest.mark.parametrize(("extra", "field"), BAD_BODIES)
def test_bad_callback_or_metadata_is_refused_and_nothing_is_stored(
    client: TestClient, extra: dict[str, Any], field: str
) -> None:
    headers = headers_for(client)
    # json.dumps escapes a lone surrogate as \ud800, as a hostile client would send it
    body = json.dumps({"code": "print(1)", **extra}).encode()
    answer = client.post(
        "/api/v1/jobs", content=body, headers={**headers, "Content-Type": "application/json"}
    )
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
    assert _names_field(answer.json(), field), answer.text
    assert client.get("/api/v1/jobs", headers=headers).json()["total"] == 0


def test_an_idempotency_key_replayed_with_another_callback_is_refused(
    client: TestClient, user: dict[str, str], receiver: Receiver
) -> None:
    key = {"Idempotency-Key": "callback-replay-1", **user}
    first = {"code": "print(1)", "callback_url": receiver.url("/a"), "metadata": {"n": "1"}}
    assert client.post("/api/v1/jobs", json=first, headers=key).status_code == 202
    replay = client.post("/api/v1/jobs", json=first, headers=key)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    changed = client.post("/api/v1/jobs", json={**first, "metadata": {"n": "2"}}, headers=key)
    assert changed.status_code == 422
    other = client.post(
        "/api/v1/jobs", json={**first, "callback_url": receiver.url("/b")}, headers=key
    )
    assert other.status_code == 422


def test_a_job_failed_by_a_restart_is_delivered_too(tmp_path: Path) -> None:
    """The previous process died with the job running: the next start fails it, and its
    callback hears about it."""
    settings = app_settings(tmp_path, **WEBHOOKS)
    upgrade_to_head(settings.database_url)
    with receiver_on() as receiver:
        engine = create_engine(settings.database_url)
        with Session(engine, expire_on_commit=False) as session:
            owner = User(username="owner", username_key="owner", password_hash="x", role=Role.USER)
            session.add(owner)
            session.flush()
            job = Job(
                user_id=owner.id,
                language="python",
                code="print(1)",
                timeout_s=5,
                status=JobStatus.RUNNING.value,
                started_at=utcnow(),
                callback_url=receiver.url("/restart"),
            )
            session.add(job)
            session.commit()
        engine.dispose()
        with running_app(settings) as client:
            headers = auth_headers(access_token_for(client, owner))
            final = wait_delivered(client, job.id, headers)
        (received,) = receiver.received
        secret = client.app.state.settings.webhook_secret  # type: ignore[attr-defined]

    assert final["status"] == "failed"
    data = Webhook(secret).verify(received.body, received.headers)["data"]
    assert (data["job_id"], data["status"], data["error"]) == (job.id, "failed", RESTART_REASON)


def test_a_job_cancelled_while_queued_is_delivered(client: TestClient, receiver: Receiver) -> None:
    headers = headers_for(client)  # MAX_CONCURRENT_RUNS_PER_USER=2: a third job waits
    sleeper = {"code": "import time; time.sleep(20)", "timeout": 25}
    sleepers = [
        client.post("/api/v1/jobs", json=sleeper, headers=headers).json()["job_id"]
        for _ in range(2)
    ]
    for job_id in sleepers:
        wait_for_status(client, job_id, headers, "running")
    body = {"code": "print(1)", "callback_url": receiver.url("/cancelled")}
    waiting = client.post("/api/v1/jobs", json=body, headers=headers).json()["job_id"]
    cancelled = client.post(f"/api/v1/jobs/{waiting}/cancel", headers=headers).json()
    job = wait_delivered(client, waiting, headers)
    for job_id in sleepers:
        client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers)
    got = [received for received in receiver.received if waiting.encode() in received.body]

    assert cancelled["status"] == "cancelled"
    assert job["deliveries"][0]["status"] == "delivered"
    (received,) = got
    assert json.loads(received.body)["data"]["status"] == "cancelled"
