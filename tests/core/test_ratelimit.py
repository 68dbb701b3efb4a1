"""Rate limits: the default per-caller limit, code execution, login brute force, proxies."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import Depends
from sqlalchemy import event

from app.auth.dependencies import execute_rate_limit
from app.auth.models import Role, User
from app.ratelimit.keys import client_ip, parse_trusted_proxies
from tests.auth.helpers import (
    DEFAULT_PASSWORD,
    auth_headers,
    create_user,
    create_user_and_token,
    fast_password_hashing,
)

__all__ = ["fast_password_hashing"]
pytestmark = pytest.mark.usefixtures("fast_password_hashing")

PROBE = "/probe/execute"
LOGIN = "/api/v1/auth/login"
VERSION = "/api/version"  # a cheap public endpoint


@pytest.fixture
def limited(make_settings: Callable, make_client: Callable) -> Callable[..., Any]:
    """Build a client on an app whose rate limits are on, with the given overrides."""

    @contextmanager
    def factory(client: tuple[str, int] = ("10.0.0.1", 5000), **overrides: Any) -> Iterator:
        settings = make_settings(rate_limit_enabled=True, **overrides)
        with make_client(settings, client=client) as test_client:

            async def probe() -> dict[str, bool]:
                return {"ran": True}

            test_client.app.add_api_route(
                PROBE, probe, methods=["POST"], dependencies=[Depends(execute_rate_limit)]
            )
            yield test_client

    return factory


def assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert error["request_id"] == response.headers["x-request-id"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert error["details"]["retry_after_s"] == retry_after
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert int(response.headers["x-ratelimit-reset"]) >= int(time.time())
    assert "x-ratelimit-limit" in response.headers


class TestDefaultLimit:
    def test_the_request_over_the_limit_gets_429_in_the_error_format(self, limited: Any) -> None:
        with limited(rate_limit_default="3/minute") as client:
            answers = [client.get(VERSION) for _ in range(4)]

        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert_rate_limited(answers[-1])
        assert answers[-1].headers["x-ratelimit-limit"] == "3"

    def test_every_answer_reports_the_remaining_budget(self, limited: Any) -> None:
        with limited(rate_limit_default="5/minute") as client:
            first, second = client.get(VERSION), client.get(VERSION)

        assert first.headers["x-ratelimit-limit"] == "5"
        assert first.headers["x-ratelimit-remaining"] == "4"
        assert second.headers["x-ratelimit-remaining"] == "3"
        assert int(first.headers["x-ratelimit-reset"]) > time.time()

    def test_unknown_paths_count_too(self, limited: Any) -> None:
        with limited(rate_limit_default="2/minute") as client:
            client.get("/nope")
            client.get("/nope/again")

            assert_rate_limited(client.get("/wp-admin"))

    def test_health_probes_are_exempt(self, limited: Any) -> None:
        with limited(rate_limit_default="1/minute") as client:
            answers = [client.get(path) for path in ["/health", "/health/ready"] * 5]
            metrics = [client.get("/metrics") for _ in range(3)]

        # /health/ready may be 503 if a check misses its deadline on a loaded machine (seen
        # once): what this test holds is that no probe is ever counted or refused
        assert all(a.status_code != 429 for a in answers + metrics)
        assert [a.status_code for a in answers[::2]] == [200] * 5  # /health: the process is up
        assert "x-ratelimit-limit" not in answers[0].headers

    def test_the_limits_of_two_users_are_independent(self, limited: Any) -> None:
        with limited(rate_limit_default="3/minute", rate_limit_exempt_admins=False) as client:
            _, alice = create_user_and_token(client)
            _, bob = create_user_and_token(client)
            for _ in range(3):
                client.get(VERSION, headers=auth_headers(alice))

            assert_rate_limited(client.get(VERSION, headers=auth_headers(alice)))
            assert client.get(VERSION, headers=auth_headers(bob)).status_code == 200

    def test_a_user_is_counted_by_id_not_by_ip(self, limited: Any) -> None:
        with limited(rate_limit_default="2/minute") as client:
            _, token = create_user_and_token(client)
            for _ in range(2):
                client.get(VERSION, headers=auth_headers(token))

            assert client.get(VERSION).status_code == 200  # same IP, anonymous: its own budget

    def test_an_invalid_token_is_counted_by_ip(self, limited: Any) -> None:
        with limited(rate_limit_default="2/minute") as client:
            client.get(VERSION, headers=auth_headers("forged.token.value"))
            client.get(VERSION, headers=auth_headers("another.forged.one"))

            assert_rate_limited(client.get(VERSION))

    def test_admins_are_exempt_when_configured(self, limited: Any) -> None:
        with limited(rate_limit_default="2/minute", rate_limit_exempt_admins=True) as client:
            _, token = create_user_and_token(client, Role.ADMIN)
            answers = [client.get(VERSION, headers=auth_headers(token)) for _ in range(5)]

        assert all(a.status_code == 200 for a in answers)

    def test_admins_are_limited_when_not_exempt(self, limited: Any) -> None:
        with limited(rate_limit_default="2/minute", rate_limit_exempt_admins=False) as client:
            _, token = create_user_and_token(client, Role.ADMIN)
            answers = [client.get(VERSION, headers=auth_headers(token)) for _ in range(3)]

        assert answers[-1].status_code == 429

    def test_nothing_is_limited_when_disabled(
        self, make_settings: Callable, make_client: Callable
    ) -> None:
        settings = make_settings(rate_limit_enabled=False, rate_limit_default="1/minute")
        with make_client(settings) as client:
            answers = [client.get(VERSION) for _ in range(5)]

        assert all(a.status_code == 200 for a in answers)
        assert "x-ratelimit-limit" not in answers[0].headers

    def test_each_app_uses_its_own_settings(self, limited: Any) -> None:
        with (
            limited(rate_limit_default="1/minute") as strict,
            limited(rate_limit_default="50/minute") as lenient,
        ):
            strict.get(VERSION)
            lenient_answers = [lenient.get(VERSION) for _ in range(5)]

            assert strict.get(VERSION).status_code == 429
        assert all(a.status_code == 200 for a in lenient_answers)

    def test_a_down_redis_falls_back_to_counting_in_memory(self, limited: Any) -> None:
        # Port 9 (discard) on loopback: nothing listens, so every Redis call fails at once.
        with limited(
            rate_limit_default="2/minute", rate_limit_storage_uri="redis://127.0.0.1:9/0"
        ) as client:
            answers = [client.get(VERSION) for _ in range(3)]

        assert [a.status_code for a in answers] == [200, 200, 429]


class TestAdminExemptionFollowsTheDatabase:
    def _demote(self, client: Any, user_id: str, **changes: Any) -> None:
        with client.app.state.session_factory() as session:
            user = session.get(User, user_id)
            for name, value in changes.items():
                setattr(user, name, value)
            session.commit()

    @pytest.mark.parametrize("change", [{"role": Role.USER.value}, {"is_active": False}])
    def test_a_demoted_admin_loses_the_exemption_at_once(
        self, limited: Any, change: dict[str, Any]
    ) -> None:
        with limited(rate_limit_default="2/minute", rate_limit_exempt_admins=True) as client:
            admin_id, token = create_user_and_token(client, Role.ADMIN)
            exempt = [client.get(VERSION, headers=auth_headers(token)) for _ in range(3)]
            self._demote(client, admin_id, **change)
            answers = [client.get(VERSION, headers=auth_headers(token)) for _ in range(3)]

        assert all(a.status_code == 200 for a in exempt)
        assert_rate_limited(answers[-1])

    def test_a_user_token_costs_the_limiter_no_database_query(self, limited: Any) -> None:
        with limited(rate_limit_default="50/minute") as client:
            _, token = create_user_and_token(client)
            with _counted_queries(client) as queries:
                for _ in range(3):
                    assert client.get(VERSION, headers=auth_headers(token)).status_code == 200

        assert queries == []


# The service's own background threads (webhook dispatch, job and submission workers, lease loops)
# poll the database on their timers; their queries are not the request's.
BACKGROUND_THREADS = ("webhook-", "job-worker-", "submission-worker-")


def _background_thread() -> bool:
    name = threading.current_thread().name
    return name.startswith(BACKGROUND_THREADS) or name.endswith("-leases")


@contextmanager
def _counted_queries(client: Any) -> Iterator[list[str]]:
    """The statements the requests in the block send (a background poll is not counted)."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        if not _background_thread():
            statements.append(args[2])

    engine = client.app.state.db_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


class TestExecuteLimit:
    def test_a_user_is_limited_on_executions(self, limited: Any) -> None:
        with limited(rate_limit_execute="2/minute") as client:
            _, token = create_user_and_token(client)
            answers = [client.post(PROBE, headers=auth_headers(token)) for _ in range(3)]

        assert [a.status_code for a in answers] == [200, 200, 429]
        assert_rate_limited(answers[-1])
        assert answers[-1].headers["x-ratelimit-limit"] == "2"
        assert answers[0].headers["x-ratelimit-limit"] == "2"  # the tighter limit is reported

    def test_two_users_have_separate_budgets(self, limited: Any) -> None:
        with limited(rate_limit_execute="1/minute") as client:
            _, alice = create_user_and_token(client)
            _, bob = create_user_and_token(client)
            client.post(PROBE, headers=auth_headers(alice))

            assert client.post(PROBE, headers=auth_headers(alice)).status_code == 429
            assert client.post(PROBE, headers=auth_headers(bob)).status_code == 200

    def test_admins_are_exempt(self, limited: Any) -> None:
        with limited(rate_limit_execute="1/minute", rate_limit_exempt_admins=True) as client:
            _, token = create_user_and_token(client, Role.ADMIN)
            answers = [client.post(PROBE, headers=auth_headers(token)) for _ in range(3)]

        assert all(a.status_code == 200 for a in answers)

    def test_anonymous_callers_get_401(self, limited: Any) -> None:
        with limited() as client:
            response = client.post(PROBE)

        assert response.status_code == 401


class TestLoginLimit:
    def test_brute_force_gets_429_while_another_ip_still_signs_in(self, limited: Any) -> None:
        with limited(
            client=("127.0.0.1", 5000), trusted_proxies=["127.0.0.1"], rate_limit_login="5/minute"
        ) as client:
            create_user(client, username="alice")
            attacker = {"X-Forwarded-For": "203.0.113.7"}
            tries = [
                client.post(
                    LOGIN, json={"username": "alice", "password": f"guess-{n}"}, headers=attacker
                )
                for n in range(6)
            ]
            owner = client.post(
                LOGIN,
                json={"username": "alice", "password": DEFAULT_PASSWORD},
                headers={"X-Forwarded-For": "198.51.100.20"},
            )

        assert [t.status_code for t in tries] == [401] * 5 + [429]
        assert_rate_limited(tries[-1])
        assert owner.status_code == 200

    def test_the_right_password_is_refused_once_limited(self, limited: Any) -> None:
        with limited(rate_limit_login="2/minute") as client:
            create_user(client, username="alice")
            for _ in range(2):
                client.post(LOGIN, json={"username": "alice", "password": "wrong-guess"})

            response = client.post(LOGIN, json={"username": "alice", "password": DEFAULT_PASSWORD})

        assert response.status_code == 429

    def test_the_username_is_matched_case_insensitively(self, limited: Any) -> None:
        with limited(
            client=("127.0.0.1", 5000),
            trusted_proxies=["127.0.0.1"],
            rate_limit_login_username="2/minute",
        ) as client:
            for n, name in enumerate(["alice", "ALICE"]):
                guess = {"username": name, "password": "wrong-guess"}
                client.post(LOGIN, json=guess, headers={"X-Forwarded-For": f"192.0.2.{n}"})

            response = client.post(
                LOGIN,
                json={"username": "Alice", "password": "wrong-guess"},
                headers={"X-Forwarded-For": "192.0.2.99"},
            )

        assert response.status_code == 429

    def test_one_address_cannot_try_many_usernames(self, limited: Any) -> None:
        with limited(rate_limit_login="3/minute") as client:
            tries = [
                client.post(LOGIN, json={"username": f"victim{n}", "password": "wrong-guess"})
                for n in range(4)
            ]

        assert [t.status_code for t in tries] == [401, 401, 401, 429]
        assert_rate_limited(tries[-1])

    def test_many_addresses_cannot_share_the_guesses_at_one_username(self, limited: Any) -> None:
        with limited(
            client=("127.0.0.1", 5000),
            trusted_proxies=["127.0.0.1"],
            rate_limit_login="5/minute",
            rate_limit_login_username="3/minute",
        ) as client:
            create_user(client, username="alice")
            tries = [
                client.post(
                    LOGIN,
                    json={"username": "alice", "password": f"guess-{n}"},
                    headers={"X-Forwarded-For": f"198.51.100.{n}"},
                )
                for n in range(4)
            ]

        assert [t.status_code for t in tries] == [401, 401, 401, 429]
        assert_rate_limited(tries[-1])

    def test_the_owners_own_sign_ins_do_not_use_up_the_username_limit(self, limited: Any) -> None:
        """Only failed attempts count per username: signing in often never locks the owner out
        (with every attempt counted, the third sign-in below would be refused)."""
        with limited(
            client=("127.0.0.1", 5000),
            trusted_proxies=["127.0.0.1"],
            rate_limit_login="50/minute",
            rate_limit_login_username="2/minute",
        ) as client:
            create_user(client, username="alice")
            good = {"username": "alice", "password": DEFAULT_PASSWORD}
            sign_ins = [client.post(LOGIN, json=good).status_code for _ in range(4)]
            wrong = [
                client.post(LOGIN, json={"username": "alice", "password": "nope"}).status_code
                for _ in range(3)
            ]

        assert sign_ins == [200, 200, 200, 200]
        assert wrong == [401, 401, 429]

    @pytest.mark.parametrize("role", [Role.USER, Role.ADMIN])
    def test_a_token_on_a_login_request_changes_nothing(self, limited: Any, role: Role) -> None:
        with limited(rate_limit_default="3/minute", rate_limit_login="50/minute") as client:
            _, token = create_user_and_token(client, role)
            for _ in range(3):
                client.get(VERSION)  # this address has spent its default budget

            response = client.post(
                LOGIN,
                json={"username": "someone", "password": "wrong-guess"},
                headers=auth_headers(token),
            )

        assert_rate_limited(response)

    def test_the_form_login_is_limited_too(self, limited: Any) -> None:
        with limited(rate_limit_login="1/minute") as client:
            client.post(LOGIN, data={"username": "alice", "password": "wrong-guess"})

            response = client.post(LOGIN, data={"username": "alice", "password": "wrong-guess"})

        assert response.status_code == 429

    def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(self, limited: Any) -> None:
        with limited(rate_limit_login="2/minute") as client:  # no trusted proxies
            for n in range(2):
                client.post(
                    LOGIN,
                    json={"username": "alice", "password": "wrong-guess"},
                    headers={"X-Forwarded-For": f"192.0.2.{n}"},
                )

            response = client.post(
                LOGIN,
                json={"username": "alice", "password": "wrong-guess"},
                headers={"X-Forwarded-For": "192.0.2.99"},
            )

        assert response.status_code == 429


def _scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"type": "http", "client": (peer, 1234), "headers": headers}


class TestClientIp:
    def test_without_trusted_proxies_the_peer_is_the_client(self) -> None:
        assert client_ip(_scope("10.1.1.1", "1.2.3.4"), []) == "10.1.1.1"

    def test_an_untrusted_peer_cannot_claim_another_address(self) -> None:
        trusted = parse_trusted_proxies(["10.0.0.0/8"])

        assert client_ip(_scope("192.0.2.5", "1.2.3.4"), trusted) == "192.0.2.5"

    def test_a_trusted_proxy_names_the_client(self) -> None:
        trusted = parse_trusted_proxies(["10.0.0.1"])

        assert client_ip(_scope("10.0.0.1", "203.0.113.9"), trusted) == "203.0.113.9"

    def test_a_client_cannot_prepend_a_fake_hop(self) -> None:
        trusted = parse_trusted_proxies(["10.0.0.0/8"])
        scope = _scope("10.0.0.1", "6.6.6.6, 203.0.113.9, 10.0.0.2")

        assert client_ip(scope, trusted) == "203.0.113.9"

    def test_garbage_in_the_header_stops_at_the_last_good_hop(self) -> None:
        trusted = parse_trusted_proxies(["10.0.0.1"])

        assert client_ip(_scope("10.0.0.1", "<script>"), trusted) == "10.0.0.1"

    def test_ipv6_works(self) -> None:
        trusted = parse_trusted_proxies(["::1"])

        assert client_ip(_scope("::1", "2001:db8::7"), trusted) == "2001:db8::7"

    def test_an_invalid_trusted_proxy_setting_is_refused(self) -> None:
        with pytest.raises(ValueError, match="TRUSTED_PROXIES"):
            parse_trusted_proxies(["not-an-ip"])

    def test_networks_are_parsed(self) -> None:
        assert parse_trusted_proxies(["10.0.0.0/8"]) == [ipaddress.ip_network("10.0.0.0/8")]
