"""Ordinary users: sign in once, then mix synchronous runs, queued jobs and job listings.

Each program has a known right answer. A script that raises (200, success=false) and a script
cut off by its 1 s timeout (200, timed_out=true) are expected outcomes, not failures; a wrong
answer to any of them is.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from locust import HttpUser, between, constant
from locust.clients import ResponseContextManager

from load_tests.scenarios.common import (
    API,
    CONFIG,
    OUTCOMES,
    Readiness,
    bearer,
    fail_unexpected_status,
    json_or_none,
    sign_in,
)

FINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})


@dataclass(frozen=True)
class Program:
    """A snippet, its run timeout, and the check that says whether its result is right."""

    tag: str
    code: str
    check: Callable[[dict[str, Any]], str | None]  # None when right, else the failure kind
    timeout_s: int | None = None

    def body(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"code": self.code, "language": "python"}
        if self.timeout_s is not None:
            payload["timeout"] = self.timeout_s
        return payload


def _check_hello(result: dict[str, Any]) -> str | None:
    if result.get("success") is not True:
        return "hello: not successful"
    if (result.get("output") or "").strip() != "hello, world":
        return "hello: wrong output"
    return None


def _check_cpu(result: dict[str, Any]) -> str | None:
    if result.get("success") is not True or result.get("timed_out"):
        return "cpu: not successful"
    if (result.get("output") or "").strip() != "done":
        return "cpu: wrong output"
    return None


def _check_raises(result: dict[str, Any]) -> str | None:
    if result.get("success") is not False or result.get("timed_out"):
        return "raises: not reported as a failed run"
    if result.get("exit_code") in (0, None) or "ValueError" not in (result.get("error") or ""):
        return "raises: traceback or exit code missing"
    return None


def _check_timeout(result: dict[str, Any]) -> str | None:
    if result.get("timed_out") is not True or result.get("success") is not False:
        return "timeout: not reported as timed out"
    return None


HELLO = Program("hello", 'print("hello, world")', _check_hello)
# 100 ms of CPU time, measured by the sandboxed process itself.
CPU = Program(
    "cpu",
    "import time\n"
    "end = time.process_time() + 0.1\n"
    "while time.process_time() < end:\n"
    "    pass\n"
    'print("done")',
    _check_cpu,
)
RAISES = Program("raises", 'raise ValueError("boom")', _check_raises)
# Sleeps rather than spins: it exercises the timeout and reset path without spending a core of
# this 2-core machine per run, which would measure the CPU, not the service.
TIMEOUT = Program("timeout", "import time\ntime.sleep(5)", _check_timeout, timeout_s=1)
PROGRAMS = {program.tag: program for program in (HELLO, CPU, RAISES, TIMEOUT)}


def result_outcome(result: dict[str, Any]) -> str:
    if result.get("timed_out"):
        return "timed_out"
    if result.get("memory_exceeded"):
        return "memory_exceeded"
    return "succeeded" if result.get("success") else "failed"


class CoderBase(HttpUser):
    """A signed-in user of the API and everything it can do; subclasses choose the mix."""

    abstract = True
    token: str | None = None

    def on_start(self) -> None:
        self.token = sign_in(self.client)
        Readiness.mark()

    @property
    def headers(self) -> dict[str, str]:
        """The bearer header; a user whose sign-in failed tries again, as a real client would."""
        if self.token is None:
            self.token = sign_in(self.client)
        return bearer(self.token or "")

    # ------------------------------------------------------------------ synchronous runs

    def execute(self, program: Program) -> None:
        name = f"POST /code/execute [{program.tag}]"
        with self.client.post(
            f"{API}/code/execute",
            json=program.body(),
            headers=self.headers,
            name=name,
            catch_response=True,
        ) as response:
            self._judge_result(response, program, name, expected_status=200)

    def _judge_result(
        self,
        response: ResponseContextManager,
        program: Program,
        name: str,
        *,
        expected_status: int,
    ) -> dict[str, Any] | None:
        body = json_or_none(response)
        if response.status_code != expected_status or body is None:
            OUTCOMES.count(name, f"http_{response.status_code}")
            fail_unexpected_status(response)
            return None
        if expected_status == 200:
            OUTCOMES.count(name, result_outcome(body))
            problem = program.check(body)
            if problem:
                response.failure(problem)
        return body

    def execute_hello(self) -> None:
        self.execute(HELLO)

    def execute_cpu(self) -> None:
        self.execute(CPU)

    def execute_raises(self) -> None:
        self.execute(RAISES)

    def execute_timeout(self) -> None:
        self.execute(TIMEOUT)

    # ------------------------------------------------------------------ queued jobs

    def submit_job(self, program: Program) -> str | None:
        name = f"POST /jobs [{program.tag}]"
        with self.client.post(
            f"{API}/jobs", json=program.body(), headers=self.headers, name=name, catch_response=True
        ) as response:
            body = self._judge_result(response, program, name, expected_status=202)
            if body is None:
                return None
            if not body.get("job_id"):
                response.failure("job: no job_id in the 202 answer")
                return None
            return str(body["job_id"])

    def poll_job(self, job_id: str, program: Program, submitted: float) -> None:
        """Poll until the job is final; a job still open at the deadline is a failure."""
        deadline = submitted + CONFIG.job_deadline_s + (program.timeout_s or 0)
        while True:
            with self.client.get(
                f"{API}/jobs/{job_id}",
                headers=self.headers,
                name="GET /jobs/{id}",
                catch_response=True,
            ) as response:
                body = json_or_none(response)
                if response.status_code != 200 or body is None:
                    fail_unexpected_status(response)
                    return
                status = body.get("status")
                if status in FINAL_JOB_STATUSES:
                    self._finish_job(response, body, program, submitted)
                    return
                if time.monotonic() > deadline:
                    response.failure(f"job: still {status} at the poll deadline")
                    OUTCOMES.count(f"job [{program.tag}]", "deadline_exceeded")
                    return
            time.sleep(CONFIG.job_poll_s)

    def _finish_job(
        self,
        response: ResponseContextManager,
        body: dict[str, Any],
        program: Program,
        submitted: float,
    ) -> None:
        flow = f"job [{program.tag}]"
        OUTCOMES.count(flow, str(body.get("status")))
        OUTCOMES.duration(f"{flow} submit-to-final", time.monotonic() - submitted)
        if body.get("status") != "succeeded":
            response.failure(f"job: ended {body.get('status')}, expected succeeded")
            return
        problem = program.check(body)
        if problem:
            response.failure(f"job: {problem}")

    def run_job(self) -> None:
        program = random.choice((HELLO, CPU))
        submitted = time.monotonic()
        job_id = self.submit_job(program)
        if job_id is not None:
            time.sleep(CONFIG.job_poll_s)
            self.poll_job(job_id, program, submitted)

    # ------------------------------------------------------------------ history

    def list_jobs(self) -> None:
        params: dict[str, str | int] = {"limit": 20, "offset": 0}
        if random.random() < 0.5:
            params["status"] = "succeeded"
        with self.client.get(
            f"{API}/jobs",
            params=params,
            headers=self.headers,
            name="GET /jobs",
            catch_response=True,
        ) as response:
            body = json_or_none(response)
            if response.status_code != 200 or body is None:
                fail_unexpected_status(response)
            elif not isinstance(body.get("items"), list) or "total" not in body:
                response.failure("list: no items/total in the page")

    def run_every_scenario(self) -> None:
        for action in (
            self.execute_hello,
            self.execute_cpu,
            self.execute_raises,
            self.execute_timeout,
            self.run_job,
            self.list_jobs,
        ):
            action()


class CoderUser(CoderBase):
    """Mostly quick synchronous runs, some jobs and history, a few slow or failing runs."""

    weight = 24
    wait_time = between(CONFIG.wait_min_s, CONFIG.wait_max_s)
    tasks = {
        CoderBase.execute_hello: 8,
        CoderBase.execute_cpu: 3,
        CoderBase.execute_raises: 1,
        CoderBase.execute_timeout: 1,
        CoderBase.run_job: 3,
        CoderBase.list_jobs: 2,
    }


class SmokeCoderUser(CoderBase):
    """Every scenario in turn, with almost no think time: a few seconds cover all of them."""

    wait_time = constant(0.05)
    tasks = [CoderBase.run_every_scenario]
