"""Deliveries reach a real receiver on loopback signed per Standard Webhooks (checked with the
library's own `Webhook.verify`), are retried with backoff after a 500 or a timeout, give up after
WEBHOOK_MAX_ATTEMPTS, follow no redirect, and survive a restart, pending or in flight."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.webhooks.sender import USER_AGENT
from app.webhooks.service import retry_delay_s
from tests.webhooks.helpers import delivered, enqueue, running, views, wait_until
from tests.webhooks.receiver import Received, receiver_on

PAYLOAD = {"submission_id": "s-1", "verdict": "accepted", "metadata": {"lesson_id": "7"}}


def verified(secret: str, received: Received) -> dict[str, object]:
    """The body as the library verifies it; raises WebhookVerificationError otherwise."""
    return Webhook(secret).verify(received.body, received.headers)  # type: ignore[no-any-return]


def test_a_delivery_is_signed_and_the_library_verifies_it(webhook_settings) -> None:
    settings = webhook_settings()
    with receiver_on() as receiver, running(settings) as client:
        resource_id = enqueue(client, receiver.url(), PAYLOAD)
        (got,) = receiver.wait_for(1)
        view = wait_until(client, resource_id, delivered)
        secret = client.app.state.settings.webhook_secret  # type: ignore[attr-defined]

    body = verified(secret, got)
    assert body["type"] == "submission.finished"
    assert body["data"] == PAYLOAD
    datetime.fromisoformat(str(body["timestamp"]))
    assert got.headers["webhook-id"] == view.delivery_id
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"] == USER_AGENT
    assert secret.startswith("whsec_")
    assert (view.status, view.attempts, view.last_status_code) == ("delivered", 1, 200)
    assert view.delivered_at is not None
    assert view.next_attempt_at is None


def test_a_signature_made_with_another_secret_does_not_verify(webhook_settings) -> None:
    settings = webhook_settings()
    with receiver_on() as receiver, running(settings) as client:
        enqueue(client, receiver.url(), PAYLOAD)
        (got,) = receiver.wait_for(1)
    other = Webhook("whsec_" + "A" * 43 + "=")
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        other.verify(got.body, got.headers)


def test_a_500_is_retried_with_growing_waits_and_the_same_webhook_id(webhook_settings) -> None:
    settings = webhook_settings()
    with receiver_on() as receiver, running(settings) as client:
        receiver.script.answers = [500, 500]
        resource_id = enqueue(client, receiver.url(), PAYLOAD)
        view = wait_until(client, resource_id, delivered)
        got = receiver.wait_for(3)
        secret = client.app.state.settings.webhook_secret  # type: ignore[attr-defined]
        times = list(receiver.times)

    assert (view.status, view.attempts, view.last_status_code) == ("delivered", 3, 200)
    assert len(got) == 3
    assert {received.headers["webhook-id"] for received in got} == {view.delivery_id}
    assert all(verified(secret, received)["data"] == PAYLOAD for received in got)
    first_wait, second_wait = times[1] - times[0], times[2] - times[1]
    assert first_wait >= 0.3 * 0.9  # WEBHOOK_RETRY_BASE_S
    assert second_wait >= 0.6 * 0.9  # doubled (the schedule itself: test_the_retry_schedule...)


def test_an_attempt_that_times_out_is_retried(webhook_settings) -> None:
    settings = webhook_settings(webhook_timeout_s=1.0, webhook_retry_base_s=0.5)
    with receiver_on() as receiver, running(settings) as client:
        receiver.script.answers = [("hold", 200)]
        resource_id = enqueue(client, receiver.url(), PAYLOAD)
        after_first = wait_until(client, resource_id, lambda view: view.attempts >= 1)
        final = wait_until(client, resource_id, delivered)
        receiver.script.release.set()

    assert after_first.status == "pending"
    assert after_first.last_status_code is None
    assert after_first.last_error == "no answer within 1 s"
    assert after_first.next_attempt_at is not None
    assert (final.status, final.attempts, final.last_error) == ("delivered", 2, None)
    assert len(receiver.received) == 2


def test_a_delivery_gives_up_after_the_last_attempt(webhook_settings) -> None:
    settings = webhook_settings(webhook_max_attempts=2, webhook_retry_base_s=0.1)
    with receiver_on() as receiver, running(settings) as client:
        receiver.script.default = 503
        resource_id = enqueue(client, receiver.url(), PAYLOAD)
        view = wait_until(client, resource_id, lambda view: view.status == "failed")
        time.sleep(0.5)  # several retry intervals: no third attempt comes
        (after,) = views(client, resource_id)

    assert (view.attempts, view.last_status_code, view.next_attempt_at) == (2, 503, None)
    assert after.attempts == 2
    assert len(receiver.received) == 2


def test_a_redirect_is_not_followed(webhook_settings) -> None:
    settings = webhook_settings(webhook_retry_base_s=30.0)
    with receiver_on() as elsewhere, receiver_on() as receiver, running(settings) as client:
        receiver.script.default = 307
        receiver.script.location = elsewhere.url("/stolen")
        resource_id = enqueue(client, receiver.url(), PAYLOAD)
        view = wait_until(client, resource_id, lambda view: view.attempts >= 1)
        time.sleep(0.3)

    assert (view.status, view.last_status_code) == ("pending", 307)
    assert elsewhere.received == []


def test_a_pending_retry_survives_a_restart(webhook_settings) -> None:
    settings = webhook_settings(webhook_retry_base_s=1.5)
    with receiver_on() as receiver:
        receiver.script.default = 500
        with running(settings) as client:
            resource_id = enqueue(client, receiver.url(), PAYLOAD)
            before = wait_until(client, resource_id, lambda view: view.attempts >= 1)
        # The service is stopped between the first attempt and its retry.
        receiver.script.default = 200
        with running(settings) as client:
            after = wait_until(client, resource_id, delivered)
            secret = client.app.state.settings.webhook_secret  # type: ignore[attr-defined]

    assert (before.status, before.last_status_code) == ("pending", 500)
    assert (after.status, after.attempts, after.last_status_code) == ("delivered", 2, 200)
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == after.delivery_id
    assert verified(secret, second)["data"] == PAYLOAD  # the same secret after the restart


def test_an_attempt_in_flight_at_shutdown_is_sent_after_the_restart(webhook_settings) -> None:
    settings = webhook_settings(webhook_timeout_s=10.0)
    with receiver_on() as receiver:
        receiver.script.answers = [("hold", 200)]
        with running(settings) as client:
            resource_id = enqueue(client, receiver.url(), PAYLOAD)
            receiver.wait_for(1)
            (in_flight,) = views(client, resource_id)
        # The first process stopped while its attempt waited for an answer.
        with running(settings) as client:
            after = wait_until(client, resource_id, delivered)
        receiver.script.release.set()  # the first process's attempt ends only now

    assert (in_flight.status, in_flight.attempts) == ("sending", 0)
    assert (after.status, after.last_status_code) == ("delivered", 200)
    assert len(receiver.received) == 2


def test_deliveries_of_other_resources_are_not_mixed(webhook_settings) -> None:
    settings = webhook_settings()
    with receiver_on() as receiver, running(settings) as client:
        job_id = enqueue(client, receiver.url("/jobs"), {"job_id": "j"}, resource="job")
        submission_id = enqueue(client, receiver.url("/subs"), {"submission_id": "s"})
        receiver.wait_for(2)
        job_view = wait_until(client, job_id, delivered, resource="job")
        assert views(client, job_id, resource="submission") == []
        assert views(client, submission_id, resource="job") == []

    assert job_view.event == "job.finished"
    paths = sorted(received.path for received in receiver.received)
    assert paths == ["/jobs", "/subs"]
    assert json.loads(receiver.received[0].body)["type"] in {"job.finished", "submission.finished"}


def test_the_retry_schedule_doubles_up_to_its_cap(webhook_settings) -> None:
    settings = webhook_settings(webhook_retry_base_s=10.0, webhook_retry_max_s=3600.0)
    waits = [retry_delay_s(settings, attempts) for attempts in range(1, 12)]
    assert waits == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert retry_delay_s(settings, 10_000) == 3600  # no overflow however many attempts
