"""Submit, read, list with filters, batch, cancel, idempotency and ownership; real pool, real DB."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from standardwebhooks import Webhook

from app.submissions.models import Submission, SubmissionCase, SubmissionMetadata
from tests.jobs.helpers import headers_for
from tests.submissions.helpers import SUBMISSIONS, hello_body, submit, wait_for_final
from tests.webhooks.receiver import receiver_on

pytestmark = pytest.mark.docker

SLEEPER = hello_body(
    code="import time; time.sleep(30)",
    timeout=30,
    test_cases=[{"expected_output": ""}] * 3,
)


def count(client: TestClient, model: type = Submission) -> int:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return session.scalar(select(func.count()).select_from(model)) or 0


class TestSubmit:
    def test_answers_202_with_location_once_stored(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        response = client.post(SUBMISSIONS, json=hello_body(), headers=user)

        assert response.status_code == 202
        body = response.json()
        assert response.headers["Location"] == f"{SUBMISSIONS}/{body['submission_id']}"
        assert body["location"] == response.headers["Location"]
        assert body["total"] == 1
        final = wait_for_final(client, body["submission_id"], user)
        assert final["verdict"] == "accepted"
        assert final["started_at"] is not None
        assert final["finished_at"] is not None

    def test_the_finished_submission_is_delivered_signed_to_its_callback(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        with receiver_on() as receiver:
            body = hello_body(
                callback_url=receiver.url("/hooks/grading"),
                metadata={"lesson_id": "7", "exercise": "fizzbuzz"},
            )
            submission_id = submit(client, user, body)
            (got,) = receiver.wait_for(1, timeout_s=60)
            submission = wait_for_final(client, submission_id, user)
            deadline = time.monotonic() + 10
            while submission["deliveries"][0]["status"] != "delivered":
                assert time.monotonic() < deadline, submission["deliveries"]
                time.sleep(0.05)
                submission = wait_for_final(client, submission_id, user)

        assert submission["callback_url"] == receiver.url("/hooks/grading")
        assert submission["metadata"] == {"lesson_id": "7", "exercise": "fizzbuzz"}
        secret = client.app.state.settings.webhook_secret  # type: ignore[attr-defined]
        event = Webhook(secret).verify(got.body, got.headers)
        assert event["type"] == "submission.finished"
        assert event["data"]["submission_id"] == submission_id
        assert event["data"]["verdict"] == "accepted"
        assert event["data"]["metadata"] == {"lesson_id": "7", "exercise": "fizzbuzz"}
        assert event["data"]["test_results"][0]["verdict"] == "accepted"
        assert "deliveries" not in event["data"]
        (delivery,) = submission["deliveries"]
        assert delivery["delivery_id"] == got.headers["webhook-id"]
        assert (delivery["attempts"], delivery["last_status_code"]) == (1, 200)

    def test_a_cancelled_queued_submission_is_delivered_too(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        with receiver_on() as receiver:
            # Fill this user's share so the next submission stays queued, then cancel it.
            slow = hello_body(
                code="import time; time.sleep(3)", test_cases=[{"expected_output": ""}]
            )
            blockers = [submit(client, user, slow) for _ in range(2)]
            queued = submit(client, user, hello_body(callback_url=receiver.url()))
            cancelled = client.post(f"{SUBMISSIONS}/{queued}/cancel", headers=user).json()
            got = receiver.wait_for(1, timeout_s=30)
            for blocker in blockers:
                wait_for_final(client, blocker, user)
        assert cancelled["status"] == "cancelled"
        assert json.loads(got[0].body)["data"]["status"] == "cancelled"

    def test_the_same_idempotency_key_returns_the_same_submission(
        self, client: TestClient, user: dict[str, str]
    ) -> None:
        key = {"Idempotency-Key": f"sub-{uuid.uuid4()}"}
        first = client.post(SUBMISSIONS, json=hello_body(), headers=user | key)
        again = client.post(SUBMISSIONS, json=hello_body(), headers=user | key)
        other = client.post(SUBMISSIONS, json=hello_body(code="print(1)"), headers=user | key)

        assert first.status_code == again.status_code == 202
        assert again.json()["submission_id"] == first.json()["submission_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert other.status_code == 422

    def test_another_users_submission_is_not_found(
        self, client: TestClient, user: dict[str, str], other_user: dict[str, str]
    ) -> None:
        submission_id = submit(client, user, hello_body())

        assert client.get(f"{SUBMISSIONS}/{submission_id}", headers=other_user).status_code == 404
        cancel = client.post(f"{SUBMISSIONS}/{submission_id}/cancel", headers=other_user)
        assert cancel.status_code == 404

    def test_a_guest_cannot_submit(self, client: TestClient) -> None:
        from app.auth.models import Role

        guest = headers_for(client, Role.GUEST)
        assert client.post(SUBMISSIONS, json=hello_body(), headers=guest).status_code == 403
        assert client.post(SUBMISSIONS, json=hello_body()).status_code == 401


BAD_INPUT: list[tuple[str, dict[str, Any], int, str]] = [
    ("no cases", {"test_cases": []}, 422, "test_cases"),
    ("65 cases", {"test_cases": [{"expected_output": "x"}] * 65}, 422, "test_cases"),
    (
        "expected output too large",
        {"test_cases": [{"expected_output": "x" * (64 * 1024 + 1)}]},
        413,
        "test_cases[0].expected_output",
    ),
    ("unknown compare", {"compare": "fuzzy"}, 422, "compare"),
    ("negative abs_tol", {"compare": "float", "abs_tol": -1}, 422, "abs_tol"),
    ("rel_tol over 1", {"compare": "float", "rel_tol": 2}, 422, "rel_tol"),
    ("nested metadata", {"metadata": {"a": {"b": "c"}}}, 422, "metadata"),
    ("number metadata", {"metadata": {"a": 1}}, 422, "metadata"),
    ("17 metadata", {"metadata": {f"k{i}": "v" for i in range(17)}}, 422, "metadata"),
    ("long metadata value", {"metadata": {"k": "v" * 257}}, 422, "metadata.k"),
    ("bad metadata key", {"metadata": {"a.b": "c"}}, 422, "metadata.a.b"),
    ("ftp callback", {"callback_url": "ftp://example.com/x"}, 422, "callback_url"),
    ("relative callback", {"callback_url": "/hooks"}, 422, "callback_url"),
    ("callback with space", {"callback_url": "http://a b.example/"}, 422, "callback_url"),
    ("private callback", {"callback_url": "http://10.0.0.7/hook"}, 422, "callback_url"),
    ("metadata callback", {"callback_url": "http://169.254.169.254/latest"}, 422, "callback_url"),
    (
        "callback not resolving",
        {"callback_url": "https://no-such-host.invalid/"},
        422,
        "callback_url",
    ),
    ("callback not UTF-8", {"callback_url": "http://a.example/\ud800"}, 422, "callback_url"),
    ("expected not UTF-8", {"test_cases": [{"expected_output": "\ud800"}]}, 422, "expected"),
    ("metadata not UTF-8", {"metadata": {"k": "\ud800"}}, 422, "metadata.k"),
    ("memory over the sandbox", {"memory_mb": 60000}, 422, "memory_mb"),
    ("case timeout over max", {"test_cases": [{"expected_output": "", "timeout": 99}]}, 422, ""),
    ("unknown field", {"extra": 1}, 422, "extra"),
    ("unknown language", {"language": "cobol"}, 400, ""),
    ("code too large", {"code": "x" * (64 * 1024 + 1)}, 413, "code"),
]


@pytest.mark.parametrize(
    ("overrides", "status", "field"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_is_refused_with_the_field_named_and_nothing_stored(
    client: TestClient, user: dict[str, str], overrides: dict[str, Any], status: int, field: str
) -> None:
    before = (count(client), count(client, SubmissionCase), count(client, SubmissionMetadata))

    raw = json.dumps(hello_body(**overrides))  # ASCII escapes carry lone surrogates too
    json_headers = user | {"Content-Type": "application/json"}
    response = client.post(SUBMISSIONS, content=raw, headers=json_headers)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"]
    assert error["message"]
    assert error["request_id"]
    assert field in str(error["details"])
    after = (count(client), count(client, SubmissionCase), count(client, SubmissionMetadata))
    assert after == before


class TestList:
    def test_filters_by_metadata_status_language_and_verdict_newest_first(
        self, client: TestClient
    ) -> None:
        owner = headers_for(client)
        lesson = str(uuid.uuid4())
        first = submit(client, owner, hello_body(metadata={"lesson_id": lesson, "ex": "a"}))
        wrong = hello_body(
            metadata={"lesson_id": lesson, "ex": "b"},
            test_cases=[{"stdin": "x", "expected_output": "y"}],
        )
        second = submit(client, owner, wrong)
        submit(client, owner, hello_body(metadata={"lesson_id": "other"}))
        for submission_id in (first, second):
            wait_for_final(client, submission_id, owner)

        def ids(query: str) -> list[str]:
            response = client.get(f"{SUBMISSIONS}?{query}", headers=owner)
            assert response.status_code == 200, response.text
            return [item["submission_id"] for item in response.json()["items"]]

        assert ids(f"metadata.lesson_id={lesson}") == [second, first]
        assert ids(f"metadata.lesson_id={lesson}&metadata.ex=a") == [first]
        assert ids(f"metadata.lesson_id={lesson}&verdict=wrong_answer") == [second]
        assert ids(f"metadata.lesson_id={lesson}&status=finished&language=python") == [
            second,
            first,
        ]
        assert ids(f"metadata.lesson_id={lesson}&language=c") == []
        page = client.get(f"{SUBMISSIONS}?limit=1&offset=1", headers=owner).json()
        assert page["total"] == 3
        assert page["limit"] == 1
        assert len(page["items"]) == 1

    def test_users_see_their_own_and_admins_everyones(
        self, client: TestClient, admin: dict[str, str]
    ) -> None:
        alice, bob = headers_for(client), headers_for(client)
        mine = submit(client, alice, hello_body())
        submit(client, bob, hello_body())

        own = client.get(SUBMISSIONS, headers=alice).json()
        assert [item["submission_id"] for item in own["items"]] == [mine]
        alice_id = own["items"][0]["user_id"]
        assert client.get(f"{SUBMISSIONS}?user_id={alice_id}", headers=bob).status_code == 403
        by_admin = client.get(f"{SUBMISSIONS}?user_id={alice_id}", headers=admin).json()
        assert [item["submission_id"] for item in by_admin["items"]] == [mine]
        assert client.get(SUBMISSIONS, headers=admin).json()["total"] >= 2

    @pytest.mark.parametrize(
        "query", ["metadata.=1", "metadata.a.b=1", f"metadata.k={'v' * 257}", "status=nope"]
    )
    def test_bad_filters_are_422(
        self, client: TestClient, user: dict[str, str], query: str
    ) -> None:
        response = client.get(f"{SUBMISSIONS}?{query}", headers=user)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"


class TestBatch:
    def test_each_item_is_accepted_or_refused_with_its_own_error(self, client: TestClient) -> None:
        owner = headers_for(client)
        items = [
            hello_body(),
            hello_body(compare="fuzzy"),
            hello_body(test_cases=[{"expected_output": "x" * (64 * 1024 + 1)}]),
            hello_body(language="cobol"),
            hello_body(metadata={"batch": "yes"}),
        ]

        response = client.post(f"{SUBMISSIONS}/batch", json={"submissions": items}, headers=owner)

        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["accepted"], body["refused"]) == (2, 3)
        outcomes = [(item["index"], item["outcome"]) for item in body["items"]]
        assert outcomes == [
            (0, "accepted"),
            (1, "refused"),
            (2, "refused"),
            (3, "refused"),
            (4, "accepted"),
        ]
        assert body["items"][1]["error"]["code"] == "VALIDATION_ERROR"
        assert "compare" in str(body["items"][1]["error"]["details"])
        assert body["items"][2]["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert body["items"][3]["error"]["code"] == "UNSUPPORTED_LANGUAGE"
        listed = client.get(SUBMISSIONS, headers=owner).json()
        accepted = {body["items"][0]["submission_id"], body["items"][4]["submission_id"]}
        assert {item["submission_id"] for item in listed["items"]} == accepted
        for submission_id in accepted:
            assert wait_for_final(client, submission_id, owner)["verdict"] == "accepted"

    @pytest.mark.parametrize("envelope", [{"submissions": []}, {"submissions": [{}] * 21}, {}])
    def test_a_malformed_envelope_refuses_the_whole_batch(
        self, client: TestClient, user: dict[str, str], envelope: dict[str, Any]
    ) -> None:
        before = count(client)
        response = client.post(f"{SUBMISSIONS}/batch", json=envelope, headers=user)
        assert response.status_code == 422
        assert count(client) == before


class TestCancel:
    def test_a_running_submission_is_cancelled_and_runs_no_further_case(
        self, client: TestClient
    ) -> None:
        owner = headers_for(client)
        submission_id = submit(client, owner, SLEEPER)
        deadline = time.monotonic() + 30
        while client.get(f"{SUBMISSIONS}/{submission_id}", headers=owner).json()["status"] != (
            "running"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # the first case is inside its container

        response = client.post(f"{SUBMISSIONS}/{submission_id}/cancel", headers=owner)

        assert response.status_code == 200
        final = wait_for_final(client, submission_id, owner, timeout_s=10)
        assert final["status"] == "cancelled"
        assert final["verdict"] is None
        assert [case["verdict"] for case in final["test_results"]] == [None, None, None]
        again = client.post(f"{SUBMISSIONS}/{submission_id}/cancel", headers=owner)
        assert again.status_code == 409
