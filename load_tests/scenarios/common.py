"""What every load user shares: configuration from the environment, sign-in, and the checks that
decide whether an answer is an expected outcome or an unexpected failure.

A failure's message is its *kind* (no ids, no timings), so Locust's failure table groups them and
the summary can report "failures by kind" straight from it.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from locust import events
from locust.clients import ResponseContextManager

API = "/api/v1"


@dataclass(frozen=True)
class LoadConfig:
    """Read once at import: run_load.sh (or the smoke test) sets these for the Locust process."""

    profile: str = os.environ.get("LOAD_PROFILE", "normal")
    # Accounts created up front by load_tests/provision.py; without them each user registers.
    user_prefix: str = os.environ.get("LOAD_USER_PREFIX", "")
    user_count: int = int(os.environ.get("LOAD_USER_COUNT", "0"))
    user_password: str = os.environ.get("LOAD_USER_PASSWORD", "")
    admin_username: str = os.environ.get("LOAD_ADMIN_USERNAME", "")
    admin_password: str = os.environ.get("LOAD_ADMIN_PASSWORD", "")
    outcomes_file: str = os.environ.get("LOAD_OUTCOMES_FILE", "")
    job_deadline_s: float = float(os.environ.get("LOAD_JOB_DEADLINE_S", "30"))
    job_poll_s: float = float(os.environ.get("LOAD_JOB_POLL_S", "0.3"))
    # Think time between two actions of one user, in seconds.
    wait_min_s: float = float(os.environ.get("LOAD_WAIT_MIN_S", "1"))
    wait_max_s: float = float(os.environ.get("LOAD_WAIT_MAX_S", "3"))


CONFIG = LoadConfig()
_account_numbers = itertools.count()


def next_account() -> tuple[str, str] | None:
    """A provisioned (username, password), handed out round-robin; None when none were made."""
    if not CONFIG.user_count or not CONFIG.user_prefix:
        return None
    number = next(_account_numbers) % CONFIG.user_count
    return f"{CONFIG.user_prefix}{number:04d}", CONFIG.user_password


@dataclass
class Outcomes:
    """Counts and durations that Locust's own stats do not keep, written out when the test stops.

    `counts[name][outcome]`: what the calls of one request name ended as (e.g. `timed_out`,
    `rate_limited`); `durations[name]`: client-side seconds of multi-request flows such as a job's
    round trip from submission to its final status.
    """

    counts: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    durations: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    # `series[name]`: (seconds since the first sample, value) pairs, to show a figure over time.
    series: defaultdict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    started: float = field(default_factory=time.monotonic)
    meta: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str, outcome: str) -> None:
        with self.lock:
            self.counts[name][outcome] += 1

    def duration(self, name: str, seconds: float) -> None:
        with self.lock:
            self.durations[name].append(seconds)

    def sample(self, name: str, value: float) -> None:
        with self.lock:
            self.series[name].append((round(time.monotonic() - self.started, 3), value))

    def reset(self) -> None:
        """Forget the ramp-up: the measured window starts now."""
        with self.lock:
            self.counts.clear()
            self.durations.clear()
            self.series.clear()
            self.started = time.monotonic()

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "meta": {**self.meta, "failed_sign_ins": Readiness.failed_sign_ins},
                "counts": {name: dict(counter) for name, counter in self.counts.items()},
                "durations_s": {name: list(values) for name, values in self.durations.items()},
                "series": {name: list(values) for name, values in self.series.items()},
            }


OUTCOMES = Outcomes()


class Readiness:
    """How many users have finished on_start (signed in, or found they could not); the failed
    sign-ins are kept here too, since the measured window's reset would drop them from the stats."""

    count = 0
    failed_sign_ins = 0

    @classmethod
    def mark(cls) -> None:
        cls.count += 1


@events.test_stop.add_listener
def _write_outcomes(**_kwargs: Any) -> None:
    if CONFIG.outcomes_file:
        with open(CONFIG.outcomes_file, "w", encoding="utf-8") as handle:
            json.dump(OUTCOMES.as_dict(), handle)


def error_code(response: Any) -> str:
    """The project's error code (`{"error": {"code"}}`), or '-' when the body has none."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "-"


def fail_unexpected_status(response: ResponseContextManager) -> None:
    """Mark a non-2xx answer as a failure whose kind names the status and the error code."""
    status = response.status_code
    if status == 0:
        response.failure(f"no response ({type(response.error).__name__})")
    elif status >= 500:
        response.failure(f"HTTP {status} {error_code(response)} (server error)")
    elif status == 429:
        response.failure("HTTP 429 RATE_LIMITED (not expected here)")
    else:
        response.failure(f"HTTP {status} {error_code(response)}")


def json_or_none(response: ResponseContextManager) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


SIGN_IN_TRIES = 5
SIGN_IN_RETRY_MAX_S = 4.0  # under uvicorn's 5 s keep-alive: the connection is still there


def login(client: Any, username: str, password: str, *, name: str) -> str | None:
    """Sign in with JSON credentials; the access token, or None (already marked as a failure).

    A 503 with Retry-After is the service's answer to more sign-ins at once than its password
    hashing line holds (a class signing in together): a client waits as it says (at most 4 s) and
    tries again, up to SIGN_IN_TRIES times; each such answer is counted (`http_503_retried`), not
    a failure, unless the last try gets one too. A retry whose kept-alive connection was closed
    meanwhile is tried once more on a new one (`no_response_retried`)."""
    for attempt in range(1, SIGN_IN_TRIES + 1):
        with client.post(
            f"{API}/auth/login",
            json={"username": username, "password": password},
            name=name,
            catch_response=True,
        ) as response:
            body = json_or_none(response)
            retry_after = response.headers.get("Retry-After", "")
            if response.status_code == 503 and retry_after.isdigit() and attempt < SIGN_IN_TRIES:
                OUTCOMES.count(name, "http_503_retried")
                response.success()
                wait_s = min(float(retry_after), SIGN_IN_RETRY_MAX_S)
            elif response.status_code == 0 and attempt > 1 and attempt < SIGN_IN_TRIES:
                # The kept-alive connection closed while we waited (uvicorn closes idle ones
                # after 5 s): a new one is opened for the next try.
                OUTCOMES.count(name, "no_response_retried")
                response.success()
                wait_s = 0.0
            elif response.status_code != 200 or not body or "access_token" not in body:
                fail_unexpected_status(response)
                return None
            else:
                return str(body["access_token"])
        time.sleep(wait_s)
    return None


def register_and_login(client: Any) -> str | None:
    """For runs without provisioned accounts (an ad hoc run against a dev server)."""
    username = f"load-{uuid.uuid4().hex[:12]}"
    password = uuid.uuid4().hex
    with client.post(
        f"{API}/auth/register",
        json={"username": username, "password": password},
        name="POST /auth/register",
        catch_response=True,
    ) as response:
        if response.status_code != 201:
            fail_unexpected_status(response)
            return None
    return login(client, username, password, name="POST /auth/login")


def sign_in(client: Any) -> str | None:
    account = next_account()
    if account is None:
        token = register_and_login(client)
    else:
        token = login(client, *account, name="POST /auth/login")
    if token is None:
        Readiness.failed_sign_ins += 1
    return token
