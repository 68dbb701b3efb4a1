"""No published secret signs tokens: without SECRET_KEY a random key is made once in DATA_DIR."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from app.auth.models import Role
from app.auth.security import TokenType, create_token
from app.core.config import INSECURE_DEFAULT_SECRET
from app.main import create_app
from tests.auth.helpers import auth_headers, create_user, login

ME = "/api/v1/users/me"


@pytest.mark.parametrize("configured", ["", INSECURE_DEFAULT_SECRET])
def test_a_token_signed_with_the_published_example_key_is_refused(
    configured: str, make_settings: Callable, make_client: Callable
) -> None:
    with make_client(make_settings(secret_key=configured)) as client:
        user = create_user(client, Role.ADMIN)
        forged = create_token(
            settings=make_settings(secret_key=INSECURE_DEFAULT_SECRET),
            subject=user.id,
            role=Role.ADMIN.value,
            token_type=TokenType.ACCESS,
        )

        response = client.get(ME, headers=auth_headers(forged.token))

    assert response.status_code == 401, response.text


def test_the_generated_key_is_private_and_kept_across_restarts(
    tmp_path: Path, make_settings: Callable, make_client: Callable
) -> None:
    settings = make_settings(secret_key="")
    with make_client(settings) as client:
        create_user(client, username="alice")
        token = login(client, "alice")["access_token"]
        first_key = client.app.state.settings.secret_key

    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == first_key
    assert len(first_key) >= 32
    with make_client(settings) as restarted:
        assert restarted.get(ME, headers=auth_headers(token)).status_code == 200


def test_each_data_dir_gets_its_own_key(tmp_path: Path, make_settings: Callable) -> None:
    one = create_app(make_settings(secret_key="", data_dir=tmp_path / "one"))
    two = create_app(make_settings(secret_key="", data_dir=tmp_path / "two"))

    assert one.state.settings.secret_key != two.state.settings.secret_key


def test_a_key_file_others_can_read_is_refused(tmp_path: Path, make_settings: Callable) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("k" * 64)
    key_file.chmod(0o644)

    with pytest.raises(ValueError, match="chmod 600"):
        create_app(make_settings(secret_key=""))


def test_a_configured_key_is_used_as_it_is(make_settings: Callable, tmp_path: Path) -> None:
    app = create_app(make_settings(secret_key="s" * 40))

    assert app.state.settings.secret_key == "s" * 40
    assert not (tmp_path / "secret_key").exists()
