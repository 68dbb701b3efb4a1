"""Settings for the webhook tests: a fresh database (SQLite or PostgreSQL) and fast retries."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.config import Settings
from tests.conftest import SettingsFactory
from tests.webhooks.helpers import FAST_RETRIES


@pytest.fixture
def webhook_settings(make_settings: SettingsFactory) -> Any:
    def factory(**overrides: Any) -> Settings:
        return make_settings(**{**FAST_RETRIES, **overrides})

    return factory
