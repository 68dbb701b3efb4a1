"""One settings class for the whole service, read from the environment and `.env`.

Validation happens when the settings are built, so a misconfigured production deployment refuses
to start with a message that names the setting instead of failing later on the first request.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import socket
from collections.abc import Callable
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The value an earlier .env.example published: anyone can read it, so it counts as unset.
INSECURE_DEFAULT_SECRET = "change-me-in-production-this-is-not-a-secret"  # noqa: S105
MIN_PRODUCTION_SECRET_LENGTH = 32
SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name inside DATA_DIR)
WEBHOOK_SECRET_FILE = "webhook_secret"  # noqa: S105 (a file name inside DATA_DIR)
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 (the Standard Webhooks secret format)
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
CountMap = Annotated[dict[str, int], NoDecode]
# The language POOL_MIN_SIZE and POOL_INITIAL_SIZE apply to (as they did when it was the only one).
DEFAULT_LANGUAGE = "python"


def _parse_counts(value: object) -> object:
    """Accept `python=1,javascript=1` (or a JSON object) for a count per language."""
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if stripped.startswith("{"):
        import json

        return json.loads(stripped)
    counts: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in stripped.split(","))):
        name, sep, count = item.partition("=")
        if not sep:
            raise ValueError(f"expected language=count, got {item!r}")
        counts[name.strip()] = count.strip()
    return counts


class Settings(BaseSettings):
    """Every knob of the service; `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- service ---
    app_name: str = "warmbox"
    environment: Environment = Environment.DEVELOPMENT
    debug: bool = False
    secret_key: str = ""
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
    password_hash_concurrency: int = Field(default=0, ge=0)
    password_hash_queue_max: int = Field(default=16, ge=0)
    password_hash_wait_s: float = Field(default=5.0, gt=0)

    # --- rate limits ---
    rate_limit_enabled: bool = True
    rate_limit_storage_uri: str = ""
    rate_limit_default: str = "100/minute"
    rate_limit_execute: str = "10/minute"
    rate_limit_login: str = "5/minute"
    rate_limit_login_username: str = "30/hour"
    rate_limit_exempt_admins: bool = True
    trusted_proxies: CsvList = Field(default_factory=list)

    # --- sandbox pool ---
    sandbox_enabled: bool = True
    # Images are named {prefix}{language}:{tag}; sandbox_python_image, when set, overrides python's.
    sandbox_image_prefix: str = "warmbox-sandbox-"
    sandbox_image_tag: str = "latest"
    sandbox_python_image: str = ""
    # Modules (comma-separated) the warm Python runner imports while idle (empty: none).
    sandbox_python_preload: str = "numpy,pandas,matplotlib,matplotlib.pyplot"
    # A fork server imports them once per container and forks every runner (false: a fresh
    # interpreter per run, which pays the imports again after every run).
    sandbox_python_fork_server: bool = True
    # Beside the forked runner, a bare interpreter (no pre-imports) runs every script that names no
    # installed package: a hello does not pay for the fork and teardown of numpy and pandas.
    sandbox_python_bare_runner: bool = True
    # Python, JavaScript and TypeScript runners tell the agent when their run has ended, so the
    # answer does not wait for the kernel's teardown (README, "How a run stays isolated").
    sandbox_exit_notices: bool = True
    sandbox_runtime: str = ""
    pool_mode: PoolMode = PoolMode.REUSE
    pool_max_total: int = Field(default=6, ge=1)
    pool_initial_size: int = Field(default=2, ge=0)
    pool_min_size: int = Field(default=1, ge=0)
    pool_min_warm: CountMap = Field(default_factory=dict)
    pool_max_size: int = Field(default=4, ge=1)
    pool_language_warm_s: float = Field(default=600.0, ge=0)
    pool_idle_timeout_s: float = Field(default=300.0, gt=0)
    pool_health_check_interval_s: float = Field(default=30.0, gt=0)
    pool_idle_reclaim_interval_s: float = Field(default=60.0, gt=0)
    pool_acquire_timeout_s: float = Field(default=5.0, ge=0)
    pool_max_runs_per_container: int = Field(default=200, ge=1)
    pool_start_timeout_s: float = Field(default=20.0, gt=0)
    # After a run somebody waits for, a language that parks (javascript, typescript, java) starts
    # the runner for the run after next once this has passed or the container's next frame came,
    # not while the answer is on its way out (0: at once, as after a queued job's run).
    pool_park_delay_ms: int = Field(default=60, ge=0, le=200)
    build_cache_max_mb: int = Field(default=64, ge=0)
    build_cache_shared: bool = False

    # --- per-container hardening limits ---
    # 0: each language's own memory (its descriptor's memory_mb); else the same for all.
    sandbox_memory_mb: int = Field(default=0, ge=0)
    sandbox_cpus: float = Field(default=1.0, gt=0)
    sandbox_pids_limit: int = Field(default=64, ge=8)
    sandbox_tmpfs_mb: int = Field(default=64, ge=1)
    sandbox_exec_tmpfs_mb: int = Field(default=128, ge=1)
    sandbox_nofile: int = Field(default=256, ge=32)
    sandbox_fsize_mb: int = Field(default=16, ge=1)

    # --- per-run limits ---
    run_default_timeout_s: float = Field(default=10.0, gt=0)
    run_max_timeout_s: float = Field(default=30.0, gt=0)
    # at most 1 MiB per stream, so a result always fits the agent protocol's 16 MiB frame
    run_output_limit_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    max_code_bytes: int = Field(default=64 * 1024, ge=1)
    run_max_args: int = Field(default=64, ge=0, le=256)
    run_max_arg_bytes: int = Field(default=4096, ge=1, le=64 * 1024)
    run_max_files: int = Field(default=20, ge=0, le=20)
    run_max_files_bytes: int = Field(default=1024 * 1024, ge=0)
    max_stdin_bytes: int = Field(default=64 * 1024, ge=0)

    # --- jobs ---
    job_queue_max: int = Field(default=100, ge=1)
    job_queue_max_per_user: int = Field(default=20, ge=0)
    max_concurrent_runs_per_user: int = Field(default=2, ge=0)
    job_workers: int = Field(default=0, ge=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0)

    # --- webhooks ---
    webhook_secret: str = ""
    webhook_allowed_hosts: CsvList = Field(default_factory=list)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)
    webhook_max_attempts: int = Field(default=10, ge=1, le=100)
    webhook_retry_base_s: float = Field(default=10.0, gt=0)
    webhook_retry_max_s: float = Field(default=3600.0, gt=0)
    webhook_workers: int = Field(default=4, ge=1, le=64)
    # --- graded submissions ---
    submission_max_test_cases: int = Field(default=64, ge=1, le=1024)
    submission_max_expected_output_bytes: int = Field(default=64 * 1024, ge=1)
    submission_max_cases_bytes: int = Field(default=1024 * 1024, ge=1)
    submission_stored_output_bytes: int = Field(default=4096, ge=0)
    submission_queue_max: int = Field(default=1000, ge=1)
    submission_queue_max_per_user: int = Field(default=100, ge=0)
    submission_workers: int = Field(default=0, ge=0)
    submission_sync_reserve: int = Field(default=1, ge=0)
    # --- streaming ---
    events_retention_s: float = Field(default=60.0, ge=0)
    events_max_finished: int = Field(default=256, ge=0)
    events_ticket_ttl_s: float = Field(default=60.0, gt=0, le=3600)
    live_first_message_timeout_s: float = Field(default=10.0, gt=0)
    # --- sessions (issue 13) ---
    sessions_max_per_user: int = Field(default=2, ge=0)
    session_idle_timeout_s: float = Field(default=600.0, gt=0)
    session_max_lifetime_s: float = Field(default=3600.0, gt=0)
    session_reap_interval_s: float = Field(default=5.0, gt=0)
    session_max_file_bytes: int = Field(default=8 * 1024 * 1024, ge=1, le=12 * 1024 * 1024)
    session_max_files: int = Field(default=256, ge=1)
    session_directory_ttl_s: float = Field(default=15.0, ge=1)
    mcp_enabled: bool = True
    # --- cluster (issue 14): several nodes on one PostgreSQL and one Redis ---
    node_id: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    node_url: str = ""
    redis_url: str = ""
    sandbox_engines: CsvList = Field(default_factory=list)
    # --- work leases (issue 14): queued work claimed by the node that has room ---
    lease_ttl_s: float = Field(default=30.0, ge=1, le=3600)
    lease_renew_interval_s: float = Field(default=10.0, gt=0)
    work_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    sandbox_engine_check_interval_s: float = Field(default=2.0, gt=0)

    # --- observability ---
    metrics_enabled: bool = True
    metrics_token: str = ""
    metrics_public: bool = False

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
        "webhook_allowed_hosts",
        "sandbox_engines",
        "code_policy_forbidden_imports",
        "code_policy_forbidden_calls",
        mode="before",
    )(_split_csv)
    _counts = field_validator("pool_min_warm", mode="before")(_parse_counts)

    @model_validator(mode="after")
    def _check_leases(self) -> Self:
        """A lease renewed less often than it lasts would expire under a live node: its work
        would be failed or run twice."""
        if self.lease_renew_interval_s * 2 > self.lease_ttl_s:
            raise ValueError(
                f"LEASE_RENEW_INTERVAL_S ({self.lease_renew_interval_s}) must be at most half of "
                f"LEASE_TTL_S ({self.lease_ttl_s}), so that one late renewal never loses a lease"
            )
        return self

    @model_validator(mode="after")
    def _fill_and_check(self) -> Self:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'warmbox.db').as_posix()}"
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("POOL_MIN_SIZE must not exceed POOL_MAX_SIZE")
        if self.pool_initial_size > self.pool_max_size:
            raise ValueError("POOL_INITIAL_SIZE must not exceed POOL_MAX_SIZE")
        if any(count < 0 for count in self.pool_min_warm.values()):
            raise ValueError("POOL_MIN_WARM counts must not be negative")
        warm = sum(self.pool_min_warm.values()) + (
            0 if DEFAULT_LANGUAGE in self.pool_min_warm else self.pool_min_size
        )
        if max(warm, self.pool_initial_size) > self.pool_max_total:
            raise ValueError("the minimum warm containers must fit in POOL_MAX_TOTAL")
        if self.run_default_timeout_s > self.run_max_timeout_s:
            raise ValueError("RUN_DEFAULT_TIMEOUT_S must not exceed RUN_MAX_TIMEOUT_S")
        if self.session_idle_timeout_s > self.session_max_lifetime_s:
            raise ValueError("SESSION_IDLE_TIMEOUT_S must not exceed SESSION_MAX_LIFETIME_S")
        if self.sandbox_runtime.startswith("runsc") and self.pool_mode is PoolMode.REUSE:
            # gVisor shows the agent no /proc/sysvipc and no /dev/mqueue and does not enforce
            # RLIMIT_MSGQUEUE: what a run leaves there cannot be found, so reuse is unprovable.
            raise ValueError(
                "SANDBOX_RUNTIME=runsc needs POOL_MODE=single_use: under gVisor the agent cannot"
                " list the System V IPC objects and POSIX message queues a run leaves behind"
            )
        if self.webhook_secret and not is_webhook_secret(self.webhook_secret):
            raise ValueError(
                "WEBHOOK_SECRET must be `whsec_` followed by the base64 of 24 to 64 random bytes"
            )
        if self.environment is Environment.PRODUCTION:
            self._refuse_unsafe_production()
        return self

    def _refuse_unsafe_production(self) -> None:
        problems = []
        if not self.has_own_secret_key or len(self.secret_key) < MIN_PRODUCTION_SECRET_LENGTH:
            problems.append(
                f"SECRET_KEY must be set to a random value of at least "
                f"{MIN_PRODUCTION_SECRET_LENGTH} characters"
            )
        if self.debug:
            problems.append("DEBUG must be off")
        if "*" in self.cors_origins and self.cors_allow_credentials:
            problems.append("CORS_ORIGINS may not be '*' while CORS_ALLOW_CREDENTIALS is on")
        if self.metrics_enabled and not self.metrics_token and not self.metrics_public:
            problems.append(
                "/metrics would be public: set METRICS_TOKEN, or METRICS_PUBLIC=true when a "
                "network boundary already keeps it private, or METRICS_ENABLED=false"
            )
        if problems:
            raise ValueError("unsafe production settings: " + "; ".join(problems))

    @property
    def has_own_secret_key(self) -> bool:
        """False when SECRET_KEY is unset or the published example value."""
        return self.secret_key not in ("", INSECURE_DEFAULT_SECRET)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def effective_node_id(self) -> str:
        """This node's name in leases and the session directory; a node that restarts under the
        same id takes back its own work, so an operator sets NODE_ID per node (the host name is
        stable for a systemd service, not for a Kubernetes pod: use the StatefulSet name there)."""
        return self.node_id or socket.gethostname()

    @property
    def clustered(self) -> bool:
        """Shared counters, events and the session directory live in Redis when it is set."""
        return bool(self.redis_url)

    @property
    def effective_rate_limit_storage_uri(self) -> str:
        """RATE_LIMIT_STORAGE_URI, else REDIS_URL (a cluster counts each caller once across its
        nodes), else memory:// (one node)."""
        return self.rate_limit_storage_uri or self.redis_url or "memory://"

    @property
    def effective_job_workers(self) -> int:
        return self.job_workers or self.pool_max_total

    @property
    def effective_submission_workers(self) -> int:
        """SUBMISSION_WORKERS, or a language pool's size less SUBMISSION_SYNC_RESERVE containers
        kept for synchronous runs (at least one worker)."""
        if self.submission_workers:
            return self.submission_workers
        pool = min(self.pool_max_size, self.pool_max_total)
        return max(1, pool - self.submission_sync_reserve)

    def min_warm(self, language: str) -> int:
        """Containers `language` keeps warm however idle it is (POOL_MIN_WARM, else
        POOL_MIN_SIZE for the default language and 0 for the others)."""
        default = self.pool_min_size if language == DEFAULT_LANGUAGE else 0
        return self.pool_min_warm.get(language, default)

    def initial_warm(self, language: str) -> int:
        """Containers started with the service: POOL_INITIAL_SIZE for the default language."""
        return self.pool_initial_size if language == DEFAULT_LANGUAGE else 0


def with_signing_key(settings: Settings) -> Settings:
    """Settings whose SECRET_KEY nobody else knows.

    Without SECRET_KEY (or with the published example value), outside production, the key is
    DATA_DIR/secret_key: made once from `secrets`, mode 0600, and kept, so tokens survive a
    restart and every process sharing DATA_DIR signs alike. Production refuses to start instead
    (see `_refuse_unsafe_production`), so it never reaches here without a key of its own.
    """
    if settings.has_own_secret_key:
        return settings
    return settings.model_copy(update={"secret_key": _stored_secret_key(settings.data_dir)})


def _stored_secret_key(data_dir: Path) -> str:
    path = data_dir / SECRET_KEY_FILE
    key = _stored_secret(path, lambda: secrets.token_urlsafe(48))
    if len(key) < MIN_PRODUCTION_SECRET_LENGTH:
        raise ValueError(f"{path} holds no usable key; remove it to have a new one made")
    return key


def _stored_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in `path`, made once with `make` (mode 0600) when the file is missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: two processes starting at once agree on one key,
        # and nobody ever reads a half-written file.
        draft = path.parent / f".{path.name}.{secrets.token_hex(8)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(make())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    if path.stat().st_mode & 0o077:
        raise ValueError(f"{path} is readable by others; chmod 600 it or remove it")
    return path.read_text().strip()


def is_webhook_secret(value: str) -> bool:
    """Whether `value` is a Standard Webhooks secret: `whsec_` + base64 of 24 to 64 bytes."""
    if not value.startswith(WEBHOOK_SECRET_PREFIX):
        return False
    try:
        raw = base64.b64decode(value.removeprefix(WEBHOOK_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return False
    return 24 <= len(raw) <= 64


def with_webhook_secret(settings: Settings) -> Settings:
    """Settings with a WEBHOOK_SECRET, when one may be made here.

    Outside production an unset secret is DATA_DIR/webhook_secret, made once like SECRET_KEY, so
    webhooks work out of the box on one machine and their signatures survive a restart. In
    production nothing is made: a receiver must be configured with the secret, and nodes that do
    not share DATA_DIR would each make their own; callbacks are then refused at submit time.
    """
    if settings.webhook_secret or settings.environment is Environment.PRODUCTION:
        return settings
    path = settings.data_dir / WEBHOOK_SECRET_FILE
    secret = _stored_secret(path, _new_webhook_secret)
    if not is_webhook_secret(secret):
        raise ValueError(f"{path} holds no usable webhook secret; remove it")
    return settings.model_copy(update={"webhook_secret": secret})


def _new_webhook_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests build their own `Settings` and pass them to create_app."""
    return Settings()
