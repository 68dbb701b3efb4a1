"""The abuse profile: callers who ignore the limits, to prove the limiter answers 429.

Run with the service's default limits. A 429 that carries Retry-After is the expected answer here;
a 429 without it, any 5xx, or any other surprise is a failure.
"""

from __future__ import annotations

import time

from locust import HttpUser, constant, task
from locust.clients import ResponseContextManager

from load_tests.scenarios.coders import HELLO, CoderBase
from load_tests.scenarios.common import API, OUTCOMES, Readiness, fail_unexpected_status

WRONG_LOGIN = "POST /auth/login [abuse: wrong password]"
EXECUTE_FLOOD = "POST /code/execute [abuse: flood]"
# Signed-in abusers log in first: until then they share the IP key of the default limit with
# the login guessers, who would otherwise use up that IP's window before them.
LOGIN_GUESSERS_START_AFTER_S = 3.0


def judge_refusal(response: ResponseContextManager, name: str) -> bool:
    """True when the answer was a proper 429 (counted, not a failure)."""
    if response.status_code != 429:
        return False
    OUTCOMES.count(name, "http_429")
    if not response.headers.get("Retry-After"):
        response.failure("HTTP 429 without Retry-After")
    else:
        response.success()
    return True


class LoginGuesser(HttpUser):
    """Guesses passwords of one account as fast as the server answers."""

    wait_time = constant(0.2)

    def on_start(self) -> None:
        time.sleep(LOGIN_GUESSERS_START_AFTER_S)
        Readiness.mark()

    @task
    def guess(self) -> None:
        with self.client.post(
            f"{API}/auth/login",
            json={"username": "abuse-target", "password": "wrong-password"},
            name=WRONG_LOGIN,
            catch_response=True,
        ) as response:
            if judge_refusal(response, WRONG_LOGIN):
                return
            if response.status_code == 401:
                OUTCOMES.count(WRONG_LOGIN, "http_401")
                response.success()
                return
            OUTCOMES.count(WRONG_LOGIN, f"http_{response.status_code}")
            fail_unexpected_status(response)


class ExecuteFlooder(CoderBase):
    """A signed-in user running code far past RATE_LIMIT_EXECUTE."""

    wait_time = constant(0.1)

    @task
    def flood(self) -> None:
        with self.client.post(
            f"{API}/code/execute",
            json=HELLO.body(),
            headers=self.headers,
            name=EXECUTE_FLOOD,
            catch_response=True,
        ) as response:
            if judge_refusal(response, EXECUTE_FLOOD):
                return
            self._judge_result(response, HELLO, EXECUTE_FLOOD, expected_status=200)
