"""A class submitting at once: graded submissions of ten cases each, bounded per user, while one
user keeps running `print('hello')` synchronously (the `burst` profile).

Each grader submits at most LOAD_SUBMISSIONS_PER_USER submissions (then stops), polls each one
until it is final, and checks its verdict: a right program must be `accepted`, a wrong one
`wrong_answer`. A submission still open at LOAD_SUBMISSION_DEADLINE_S is a failure (stuck).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from locust import between, constant
from locust.exception import StopUser

from load_tests.scenarios.coders import CoderBase
from load_tests.scenarios.common import API, OUTCOMES, fail_unexpected_status, json_or_none

SUBMISSIONS_PER_USER = int(os.environ.get("LOAD_SUBMISSIONS_PER_USER", "10"))
SUBMISSION_DEADLINE_S = float(os.environ.get("LOAD_SUBMISSION_DEADLINE_S", "300"))
CASES = 10
RIGHT = "a, b = map(int, input().split())\nprint(a + b)"
WRONG = "a, b = map(int, input().split())\nprint(a - b)"
FINAL = frozenset({"finished", "cancelled", "failed"})


def submission_body(code: str) -> dict[str, Any]:
    cases = []
    for _case in range(CASES):
        a, b = random.randint(1, 10**6), random.randint(1, 10**6)
        cases.append({"stdin": f"{a} {b}\n", "expected_output": f"{a + b}\n"})
    return {"language": "python", "code": code, "test_cases": cases, "metadata": {"load": "burst"}}


class GraderUser(CoderBase):
    """Submits its share of the burst at once, then waits for every verdict."""

    weight = 30
    wait_time = between(0.0, 0.2)

    def on_start(self) -> None:
        super().on_start()
        self.sent = 0

    def submit(self, expected: str, code: str) -> tuple[str, float] | None:
        name = "POST /submissions"
        with self.client.post(
            f"{API}/submissions",
            json=submission_body(code),
            headers=self.headers,
            name=name,
            catch_response=True,
        ) as response:
            body = json_or_none(response)
            if response.status_code != 202 or body is None:
                OUTCOMES.count(name, f"http_{response.status_code}")
                fail_unexpected_status(response)
                return None
            OUTCOMES.count(name, f"expect_{expected}")
            return str(body["submission_id"]), time.monotonic()

    def wait_for_verdict(self, submission_id: str, expected: str, submitted: float) -> None:
        while True:
            time.sleep(1.0)
            with self.client.get(
                f"{API}/submissions/{submission_id}",
                headers=self.headers,
                name="GET /submissions/{id}",
                catch_response=True,
            ) as response:
                body = json_or_none(response)
                if response.status_code != 200 or body is None:
                    fail_unexpected_status(response)
                    return
                if body.get("status") in FINAL:
                    OUTCOMES.count("submission", str(body.get("verdict")))
                    OUTCOMES.duration("submission 202-to-final", time.monotonic() - submitted)
                    if body.get("verdict") != expected:
                        response.failure(f"submission: {body.get('verdict')}, expected {expected}")
                    return
                if time.monotonic() - submitted > SUBMISSION_DEADLINE_S:
                    response.failure("submission: still open at the deadline")
                    return

    def burst(self) -> None:
        """All of this user's submissions at once, then every verdict."""
        if self.sent >= SUBMISSIONS_PER_USER:
            raise StopUser()
        sent = []
        while self.sent < SUBMISSIONS_PER_USER:
            self.sent += 1
            expected, code = ("wrong_answer", WRONG) if self.sent % 10 == 3 else ("accepted", RIGHT)
            accepted = self.submit(expected, code)
            if accepted is not None:
                sent.append((accepted[0], expected, accepted[1]))
        for submission_id, expected, submitted in sent:
            self.wait_for_verdict(submission_id, expected, submitted)

    tasks = [burst]


class InteractiveUser(CoderBase):
    """Another user's synchronous hello world while the class's submissions are graded."""

    fixed_count = 1
    wait_time = constant(0.1)
    tasks = [CoderBase.execute_hello]
