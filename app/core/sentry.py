"""Sentry is initialised only when SENTRY_DSN is set, and sends no personal data by default."""

from __future__ import annotations

import sentry_sdk
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.sqlalchemy import SqlalchemyIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration

from app import __version__
from app.core.config import Settings


def init_sentry(settings: Settings) -> bool:
    """Return whether Sentry was switched on."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.environment.value,
        release=f"warmbox@{__version__}",
        traces_sample_rate=settings.sentry_traces_sample_rate,
        send_default_pii=settings.sentry_send_default_pii,
        integrations=[StarletteIntegration(), FastApiIntegration(), SqlalchemyIntegration()],
    )
    return True
