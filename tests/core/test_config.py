"""Settings fail fast, with a message naming the setting, when production would be unsafe."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.config import INSECURE_DEFAULT_SECRET, Settings

STRONG_SECRET = "x" * 48
METRICS_TOKEN = "m" * 32


def production(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "environment": "production",
        "secret_key": STRONG_SECRET,
        "metrics_token": METRICS_TOKEN,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


class TestProductionRefusals:
    def test_default_secret_is_refused(self):
        with pytest.raises(ValidationError, match="SECRET_KEY"):
            production(secret_key=Settings.model_fields["secret_key"].default)

    def test_the_published_example_secret_is_refused(self):
        with pytest.raises(ValidationError, match="SECRET_KEY"):
            production(secret_key=INSECURE_DEFAULT_SECRET)

    def test_a_public_metrics_endpoint_is_refused(self):
        with pytest.raises(ValidationError, match="METRICS_TOKEN"):
            production(metrics_token="")

    def test_a_public_metrics_endpoint_is_accepted_when_the_operator_says_so(self):
        assert production(metrics_token="", metrics_public=True).metrics_public

    def test_no_metrics_endpoint_needs_no_token(self):
        assert not production(metrics_token="", metrics_enabled=False).metrics_enabled

    def test_short_secret_is_refused(self):
        with pytest.raises(ValidationError, match="at least 32"):
            production(secret_key="short-but-not-default")

    def test_debug_is_refused(self):
        with pytest.raises(ValidationError, match="DEBUG must be off"):
            production(debug=True)

    def test_wildcard_cors_with_credentials_is_refused(self):
        with pytest.raises(ValidationError, match="CORS_ORIGINS"):
            production(cors_origins="*")

    def test_safe_production_settings_are_accepted(self):
        settings = production(cors_origins="https://learn.example")
        assert settings.cors_origins == ["https://learn.example"]

    def test_development_tolerates_the_default_secret(self):
        assert Settings(_env_file=None).environment.value == "development"


class TestValues:
    def test_lists_accept_commas_and_json(self):
        assert Settings(_env_file=None, cors_origins="http://a, http://b").cors_origins == [
            "http://a",
            "http://b",
        ]
        assert Settings(_env_file=None, cors_origins='["http://c"]').cors_origins == ["http://c"]

    def test_environment_variables_are_read(self, monkeypatch):
        monkeypatch.setenv("POOL_MAX_SIZE", "7")
        assert Settings(_env_file=None).pool_max_size == 7

    def test_inconsistent_pool_sizes_are_refused(self):
        with pytest.raises(ValidationError, match="POOL_MIN_SIZE"):
            Settings(_env_file=None, pool_min_size=5, pool_max_size=2)

    def test_database_defaults_to_sqlite_in_the_data_dir(self, tmp_path):
        settings = Settings(_env_file=None, data_dir=tmp_path)
        assert settings.database_url == f"sqlite:///{tmp_path}/warmbox.db"
        assert settings.is_sqlite
