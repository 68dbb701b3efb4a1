"""The first admin: from ADMIN_USERNAME/ADMIN_PASSWORD at start-up, or `python -m app.cli`."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from app.auth import repository
from app.auth.models import Role
from app.auth.security import verify_password
from app.auth.service import create_user, ensure_admin_from_settings
from app.cli import main as cli_main
from app.core.db import create_db_engine, create_session_factory
from app.core.migrations import upgrade_to_head
from tests.auth.helpers import login


class TestAdminFromSettings:
    def test_start_up_creates_the_admin_who_can_sign_in(
        self, make_settings: Callable, make_client: Callable
    ) -> None:
        settings = make_settings(admin_username="root", admin_password="a-strong-password")

        with make_client(settings) as client:
            pair = login(client, "root", "a-strong-password")
            me = client.get(
                "/api/v1/users/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
            )

        assert me.json()["role"] == "admin"

    def test_an_existing_user_is_never_overwritten(self, make_settings: Callable) -> None:
        settings = make_settings(admin_username="root", admin_password="a-strong-password")
        upgrade_to_head(settings.database_url)
        factory = create_session_factory(create_db_engine(settings))
        with factory() as session:
            create_user(session, username="ROOT", password="the-original-one", role=Role.USER)
            session.commit()

        ensure_admin_from_settings(factory, settings)

        with factory() as session:
            user = repository.get_user_by_username(session, "root")
            assert user is not None
            assert user.role == "user"
            assert verify_password(user.password_hash, "the-original-one")
            assert repository.count_users(session) == 1

    def test_runs_once_across_restarts(self, make_settings: Callable) -> None:
        settings = make_settings(admin_username="root", admin_password="a-strong-password")
        upgrade_to_head(settings.database_url)
        factory = create_session_factory(create_db_engine(settings))

        ensure_admin_from_settings(factory, settings)
        ensure_admin_from_settings(factory, settings)

        with factory() as session:
            assert repository.count_active_admins(session) == 1

    def test_does_nothing_without_both_settings(self, make_settings: Callable) -> None:
        settings = make_settings(admin_username="root")
        upgrade_to_head(settings.database_url)
        factory = create_session_factory(create_db_engine(settings))

        ensure_admin_from_settings(factory, settings)

        with factory() as session:
            assert repository.count_users(session) == 0

    def test_a_weak_admin_password_stops_start_up(self, make_settings: Callable) -> None:
        settings = make_settings(admin_username="root", admin_password="root")
        upgrade_to_head(settings.database_url)
        factory = create_session_factory(create_db_engine(settings))

        with pytest.raises(ValueError, match="ADMIN_PASSWORD"):
            ensure_admin_from_settings(factory, settings)


class TestCreateAdminCommand:
    def test_creates_an_admin_from_a_password_on_stdin(self, make_settings: Callable) -> None:
        settings = make_settings()
        upgrade_to_head(settings.database_url)

        code = cli_main(
            ["create-admin", "--username", "ops", "--password-stdin"],
            settings=settings,
            stdin=io.StringIO("a-strong-password\n"),
        )

        assert code == 0
        factory = create_session_factory(create_db_engine(settings))
        with factory() as session:
            user = repository.get_user_by_username(session, "ops")
            assert user is not None
            assert user.role == "admin"

    def test_refuses_an_existing_username(
        self, make_settings: Callable, capsys: pytest.CaptureFixture[str]
    ) -> None:
        settings = make_settings()
        upgrade_to_head(settings.database_url)
        args = ["create-admin", "--username", "ops", "--password-stdin"]
        cli_main(args, settings=settings, stdin=io.StringIO("a-strong-password\n"))

        code = cli_main(args, settings=settings, stdin=io.StringIO("another-password\n"))

        assert code == 1
        assert "taken" in capsys.readouterr().err

    def test_refuses_a_weak_password(
        self, make_settings: Callable, capsys: pytest.CaptureFixture[str]
    ) -> None:
        settings = make_settings()
        upgrade_to_head(settings.database_url)

        code = cli_main(
            ["create-admin", "--username", "ops", "--password-stdin"],
            settings=settings,
            stdin=io.StringIO("short\n"),
        )

        assert code == 1
        assert "at least" in capsys.readouterr().err
