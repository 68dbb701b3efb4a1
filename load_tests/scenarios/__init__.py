"""Locust user classes, one module per kind of caller; load_tests/locustfile.py picks a profile."""

from load_tests.scenarios.abuse import ExecuteFlooder, LoginGuesser
from load_tests.scenarios.admins import AdminUser, SmokeAdminUser
from load_tests.scenarios.coders import CoderUser, SmokeCoderUser
from load_tests.scenarios.graders import GraderUser, InteractiveUser
from load_tests.scenarios.health import HealthProbe

PROFILES = {
    # 50 users: ~48 coders and ~2 admins by weight, plus the health probe.
    "normal": (CoderUser, AdminUser, HealthProbe),
    # Default limits left on; every 429 must carry Retry-After, nothing may answer 5xx.
    "abuse": (LoginGuesser, ExecuteFlooder, HealthProbe),
    # A few seconds that touch every scenario once or more (tests/load/test_locust_smoke.py).
    "smoke": (SmokeCoderUser, SmokeAdminUser, HealthProbe),
    # A class submits at once: graders (10 submissions x 10 cases each, then they stop) and one
    # user running print('hello') synchronously throughout, whose p95 must stay low.
    "burst": (GraderUser, InteractiveUser, HealthProbe),
}

__all__ = [
    "PROFILES",
    "AdminUser",
    "CoderUser",
    "ExecuteFlooder",
    "GraderUser",
    "HealthProbe",
    "InteractiveUser",
    "LoginGuesser",
    "SmokeAdminUser",
    "SmokeCoderUser",
]
