"""The measured window: N seconds that start once every user is spawned and signed in.

Signing in costs an argon2 verification (~200 ms of CPU here), so a ramp-up of 50 users is a
burst of hashing that is not "50 concurrent users running code". With LOAD_MEASURE_S set, the
stats are reset when the last user is ready and the run stops LOAD_MEASURE_S later; Locust's
own --run-time stays on as the outer bound. Without it, the whole run is measured.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from typing import Any

import gevent
from locust import events
from locust.env import Environment

from load_tests.leaks import cpu_snapshot
from load_tests.scenarios.common import OUTCOMES, Readiness

MEASURE_S = float(os.environ.get("LOAD_MEASURE_S", "0"))
READY_DEADLINE_S = float(os.environ.get("LOAD_READY_DEADLINE_S", "120"))
SERVER_PID = int(os.environ.get("LOAD_SERVER_PID", "0"))
log = logging.getLogger("load_tests.measure")


def _measure(environment: Environment) -> None:
    runner = environment.runner
    assert runner is not None
    deadline = time.monotonic() + READY_DEADLINE_S
    while time.monotonic() < deadline and (
        runner.user_count < runner.target_user_count or Readiness.count < runner.target_user_count
    ):
        gevent.sleep(0.1)
    ready = Readiness.count
    runner.stats.reset_all()
    OUTCOMES.reset()
    OUTCOMES.meta["ramp_up_s"] = round(time.monotonic() - (deadline - READY_DEADLINE_S), 1)
    OUTCOMES.meta["users_ready_at_start"] = ready
    OUTCOMES.meta["measured_s"] = MEASURE_S
    log.warning("measuring: %d users ready, stats reset, %gs window", ready, MEASURE_S)
    start = _cpu()
    gevent.sleep(MEASURE_S)
    OUTCOMES.meta["cpu_cores_used"] = _cores_used(start, _cpu())
    log.warning("measured window over, shutting down")
    runner.quit()


def _cpu() -> dict[str, Any]:
    """Where the CPU went: the server, the Docker daemons, this Locust process, the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    counters = cpu_snapshot(SERVER_PID) if SERVER_PID else {"wall_s": time.time()}
    return {**counters, "locust_cpu_s": usage.ru_utime + usage.ru_stime}


def _cores_used(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    wall = end["wall_s"] - start["wall_s"]
    return {
        key.removesuffix("_cpu_s"): round((end[key] - start[key]) / wall, 2)
        for key in end
        if key.endswith("_cpu_s") and end[key] is not None and start.get(key) is not None
    }


def _start_window(environment: Environment, **_kwargs: Any) -> None:
    gevent.spawn(_measure, environment).link_exception(lambda _: runner_quit(environment))


def runner_quit(environment: Environment) -> None:
    if environment.runner is not None:
        environment.runner.quit()


def install() -> None:
    """Measure a window (when LOAD_MEASURE_S is set) instead of the whole run."""
    if MEASURE_S > 0:
        events.test_start.add_listener(_start_window)
