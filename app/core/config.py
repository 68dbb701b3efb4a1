"""One settings class for the whole service, read from the environment and `.env`.

Validation happens when the settings are built, so a misconfigured production deployment refuses
to start with a message that names the setting instead of failing later on the first request.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

INSECURE_DEFAULT_SECRET = "change-me-in-production-this-is-not-a-secret"  # noqa: S105
MIN_PRODUCTION_SECRET_LENGTH = 32
REPO_ROOT = Path(__file__).resolve().parents[2]


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class PoolMode(StrEnum):
    REUSE = "reuse"
    SINGLE_USE = "single_use"


def _split_csv(value: object) -> object:
    """Accept `a,b,c` (the natural shape of an env var) as well as a JSON list."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            import json

            return json.loads(stripped)
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Every knob of the service; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- service ---
    app_name: str = "warmbox"
    environment: Environment = Environment.DEVELOPMENT
    debug: bool = False
    secret_key: str = INSECURE_DEFAULT_SECRET
    cors_origins: CsvList = Field(default_factory=lambda: ["http://localhost:3000"])
    cors_allow_credentials: bool = True
    max_request_body_bytes: int = Field(default=512 * 1024, ge=1024)
    slow_request_ms: float = Field(default=1000.0, gt=0)
    data_dir: Path = REPO_ROOT / "data"

    # --- database ---
    database_url: str = ""
    database_echo: bool = False
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    database_connect_timeout_s: float = Field(default=3.0, gt=0)

    # --- logging and error reporting ---
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"
    sentry_dsn: str = ""
    sentry_traces_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    sentry_send_default_pii: bool = False

    # --- identity ---
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "warmbox"
    jwt_audience: str = "warmbox-api"
    access_token_expire_minutes: int = Field(default=15, ge=1)
    refresh_token_expire_minutes: int = Field(default=7 * 24 * 60, ge=1)
    allow_registration: bool = True
    password_min_length: int = Field(default=8, ge=6)
    admin_username: str = ""
    admin_password: str = ""

    # --- rate limits ---
    rate_limit_enabled: bool = True
    rate_limit_storage_uri: str = "memory://"
    rate_limit_default: str = "100/minute"
    rate_limit_execute: str = "10/minute"
    rate_limit_login: str = "5/minute"
    rate_limit_exempt_admins: bool = True
    trusted_proxies: CsvList = Field(default_factory=list)

    # --- sandbox pool ---
    sandbox_enabled: bool = True
    sandbox_python_image: str = "warmbox-sandbox-python:latest"
    sandbox_runtime: str = ""
    pool_mode: PoolMode = PoolMode.REUSE
    pool_initial_size: int = Field(default=2, ge=0)
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=4, ge=1)
    pool_idle_timeout_s: float = Field(default=300.0, gt=0)
    pool_health_check_interval_s: float = Field(default=30.0, gt=0)
    pool_idle_reclaim_interval_s: float = Field(default=60.0, gt=0)
    pool_acquire_timeout_s: float = Field(default=5.0, ge=0)
    pool_max_runs_per_container: int = Field(default=200, ge=1)
    pool_start_timeout_s: float = Field(default=20.0, gt=0)

    # --- per-container hardening limits ---
    sandbox_memory_mb: int = Field(default=256, ge=32)
    sandbox_cpus: float = Field(default=1.0, gt=0)
    sandbox_pids_limit: int = Field(default=64, ge=8)
    sandbox_tmpfs_mb: int = Field(default=64, ge=1)
    sandbox_nofile: int = Field(default=256, ge=32)
    sandbox_fsize_mb: int = Field(default=16, ge=1)

    # --- per-run limits ---
    run_default_timeout_s: float = Field(default=10.0, gt=0)
    run_max_timeout_s: float = Field(default=30.0, gt=0)
    # at most 1 MiB per stream, so a result always fits the agent protocol's 16 MiB frame
    run_output_limit_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    max_code_bytes: int = Field(default=64 * 1024, ge=1)
    max_stdin_bytes: int = Field(default=64 * 1024, ge=0)

    # --- jobs ---
    job_queue_max: int = Field(default=100, ge=1)
    job_workers: int = Field(default=0, ge=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)

    # --- observability ---
    metrics_enabled: bool = True
    metrics_token: str = ""

    # --- optional teaching policy (never the security boundary) ---
    code_policy_enabled: bool = False
    code_policy_forbidden_imports: CsvList = Field(
        default_factory=lambda: ["ctypes", "socket", "subprocess", "multiprocessing"]
    )
    code_policy_forbidden_calls: CsvList = Field(
        default_factory=lambda: ["eval", "exec", "compile", "__import__"]
    )
    code_policy_max_depth: int = Field(default=10, ge=1)

    _split = field_validator(
        "cors_origins",
        "trusted_proxies",
        "code_policy_forbidden_imports",
        "code_policy_forbidden_calls",
        mode="before",
    )(_split_csv)

    @model_validator(mode="after")
    def _fill_and_check(self) -> Self:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'warmbox.db').as_posix()}"
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("POOL_MIN_SIZE must not exceed POOL_MAX_SIZE")
        if self.pool_initial_size > self.pool_max_size:
            raise ValueError("POOL_INITIAL_SIZE must not exceed POOL_MAX_SIZE")
        if self.run_default_timeout_s > self.run_max_timeout_s:
            raise ValueError("RUN_DEFAULT_TIMEOUT_S must not exceed RUN_MAX_TIMEOUT_S")
        if self.environment is Environment.PRODUCTION:
            self._refuse_unsafe_production()
        return self

    def _refuse_unsafe_production(self) -> None:
        problems = []
        if self.secret_key == INSECURE_DEFAULT_SECRET or (
            len(self.secret_key) < MIN_PRODUCTION_SECRET_LENGTH
        ):
            problems.append(
                f"SECRET_KEY must be set to a random value of at least "
                f"{MIN_PRODUCTION_SECRET_LENGTH} characters"
            )
        if self.debug:
            problems.append("DEBUG must be off")
        if "*" in self.cors_origins and self.cors_allow_credentials:
            problems.append("CORS_ORIGINS may not be '*' while CORS_ALLOW_CREDENTIALS is on")
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_job_workers(self) -> int:
        return self.job_workers or self.pool_max_size


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` and pass them to create_app."""
    return Settings()
