"""WEBHOOK_SECRET: made once in DATA_DIR outside production (private, kept across restarts),
never made in production."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from standardwebhooks import Webhook

from app.core.config import WEBHOOK_SECRET_FILE, Settings, is_webhook_secret, with_webhook_secret
from tests.webhooks.helpers import enqueue, running, views
from tests.webhooks.receiver import receiver_on


def test_an_unset_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, environment="test", data_dir=tmp_path)  # type: ignore[call-arg]
    first = with_webhook_secret(settings).webhook_secret
    second = with_webhook_secret(settings).webhook_secret
    assert first == second
    assert is_webhook_secret(first)
    Webhook(first)  # the library takes it as it is
    mode = stat.S_IMODE((tmp_path / WEBHOOK_SECRET_FILE).stat().st_mode)
    assert mode == 0o600


def test_production_never_makes_a_secret(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="production",
        data_dir=tmp_path,
        secret_key="s" * 40,
        metrics_enabled=False,
    )
    assert with_webhook_secret(settings).webhook_secret == ""
    assert not (tmp_path / WEBHOOK_SECRET_FILE).exists()


def test_a_configured_secret_signs_the_deliveries(webhook_settings) -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = webhook_settings(webhook_secret=secret)
    latencies = []
    with receiver_on() as receiver, running(settings) as client:
        for n in range(5):
            started = time.monotonic()
            enqueue(client, receiver.url(), {"n": n})
            receiver.wait_for(n + 1)
            latencies.append(receiver.times[n] - started)
    got = receiver.received
    assert [Webhook(secret).verify(one.body, one.headers)["data"] for one in got] == [
        {"n": n} for n in range(5)
    ]
    assert not (settings.data_dir / WEBHOOK_SECRET_FILE).exists()
    # Woken by the enqueuing commit, not by its once-a-second look at the database (without
    # the wake, five in a row all under 0.4 s would happen about once in a hundred).
    assert max(latencies) < 0.4, latencies


def test_without_a_secret_the_service_starts_and_sends_nothing_unsigned(webhook_settings) -> None:
    # Production without WEBHOOK_SECRET: the start-up used to fail inside the library
    # ("webhook secret may not be empty"), taking the whole API down with it.
    settings = webhook_settings(
        environment="production", secret_key="s" * 40, metrics_enabled=False, webhook_secret=""
    )
    with receiver_on() as receiver, running(settings) as client:
        assert client.get("/health").status_code == 200
        resource_id = enqueue(client, receiver.url(), {"n": 1})  # as a row left from before
        time.sleep(1.0)
        (view,) = views(client, resource_id)
    assert receiver.received == []
    assert view.status in {"pending", "failed"}
    assert view.last_error is not None
    assert "WEBHOOK_SECRET" in view.last_error
