"""With RATE_LIMIT_STORAGE_URI=redis://..., replicas share one budget per caller.

Needs the Redis server that scripts/services.sh starts (WARMBOX_TEST_REDIS_URL). Skipped locally
without it; under CI=true a missing server is a failure, so CI never silently loses this test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.auth.helpers import auth_headers, create_user_and_token, fast_password_hashing

__all__ = ["fast_password_hashing"]
pytestmark = [pytest.mark.redis, pytest.mark.usefixtures("fast_password_hashing")]

VERSION = "/api/version"


class TestRedisStorage:
    def test_two_replicas_share_one_budget_per_caller(
        self, redis_url: str, make_settings: Callable, make_client: Callable
    ) -> None:
        # A fresh app name namespaces the keys, so reruns and parallel runs never collide.
        settings = make_settings(
            rate_limit_enabled=True,
            rate_limit_storage_uri=redis_url,
            rate_limit_default="3/minute",
            rate_limit_exempt_admins=False,
            app_name=f"warmbox-test-{uuid.uuid4().hex[:12]}",
        )
        with make_client(settings) as replica_a, make_client(settings) as replica_b:
            _, alice = create_user_and_token(replica_a)
            _, bob = create_user_and_token(replica_a)
            answers = [
                replica_a.get(VERSION, headers=auth_headers(alice)),
                replica_b.get(VERSION, headers=auth_headers(alice)),
                replica_a.get(VERSION, headers=auth_headers(alice)),
                replica_b.get(VERSION, headers=auth_headers(alice)),
            ]
            bob_answer = replica_b.get(VERSION, headers=auth_headers(bob))
            storage_ok = replica_a.app.state.rate_limits.limiter._storage.check()

        assert storage_ok, "the limiter did not reach Redis"
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[-1].json()["error"]["code"] == "RATE_LIMITED"
        assert answers[-1].headers["retry-after"]
        assert bob_answer.status_code == 200
