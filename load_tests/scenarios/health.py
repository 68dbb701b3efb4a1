"""One probe that asks `/health` every half second for the whole run.

Liveness must stay fast while the sandboxes are busy: the probe's latencies (each also kept with
its time, to show *when* a slow answer happened) are the evidence for the 50 ms target.
"""

from __future__ import annotations

from locust import HttpUser, constant, task

from load_tests.scenarios.common import (
    OUTCOMES,
    Readiness,
    fail_unexpected_status,
    json_or_none,
)

PROBE_NAME = "GET /health [probe]"


class HealthProbe(HttpUser):
    fixed_count = 1  # spawned first, and in addition to the weighted users
    wait_time = constant(0.5)

    def on_start(self) -> None:
        Readiness.mark()

    @task
    def probe(self) -> None:
        with self.client.get("/health", name=PROBE_NAME, catch_response=True) as response:
            OUTCOMES.sample(PROBE_NAME, round(response.request_meta["response_time"], 2))
            body = json_or_none(response)
            if response.status_code != 200 or body is None:
                fail_unexpected_status(response)
            elif body.get("status") != "ok":
                response.failure("health: status is not ok")
