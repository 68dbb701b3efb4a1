"""One face for the service layer: a pool per installed language, started and stopped together.

If the engine or an image is missing at start-up the service still starts (auth, job history and
health keep answering); every run then fails with the same clear SandboxError, which names the
command that builds the image, and readiness reports the sandbox unhealthy. The start is tried
again, at most every RETRY_START_AFTER_S, when a run or a readiness check needs the sandbox, so
an engine started or an image built later heals the service without a restart.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import docker
import structlog

from app.core.config import Settings
from app.core.errors import SandboxError
from app.sandbox import engine
from app.sandbox.languages import LANGUAGES, get_language
from app.sandbox.pool import ContainerPool, PoolHealth
from app.sandbox.types import RunRequest, RunResult

log = structlog.get_logger(__name__)

RETRY_START_AFTER_S = 30.0


class SandboxManager:
    def __init__(self, settings: Settings, client: docker.DockerClient | None = None) -> None:
        self.settings = settings
        self.client = client
        self.pools: dict[str, ContainerPool] = {}
        self.error: SandboxError | None = None
        self._last_attempt = 0.0
        self._start_lock = threading.Lock()
        self._closed = False

    def start(self) -> None:
        """Start a pool for every language; record the failure instead of raising it."""
        with self._start_lock:
            self._last_attempt = time.monotonic()
            try:
                if self.client is None:
                    self.client = engine.connect(self.settings.pool_max_size)
                for language in LANGUAGES.values():
                    if language.name not in self.pools and not self._closed:
                        pool = ContainerPool(self.settings, self.client, language)
                        pool.start()
                        self.pools[language.name] = pool
                self.error = None
            except SandboxError as exc:
                self.error = exc
                log.error("sandbox_unavailable", error=exc.message)

    def _retry_start_if_due(self) -> None:
        due = time.monotonic() - self._last_attempt >= RETRY_START_AFTER_S
        if self.error is not None and due and not self._closed:
            log.info("sandbox_start_retry")
            self.start()

    def shutdown(self) -> None:
        self._closed = True
        for pool in self.pools.values():
            pool.shutdown()
        self.pools.clear()
        if self.client is not None:
            self.client.close()

    def pool_for(self, language: str) -> ContainerPool:
        """The pool of `language`; UnsupportedLanguageError or the start-up SandboxError."""
        get_language(language, set(LANGUAGES))
        if language not in self.pools:
            self._retry_start_if_due()
        pool = self.pools.get(language)
        if pool is None:
            raise self.error or SandboxError(f"no sandbox pool for {language!r}")
        return pool

    def run(self, request: RunRequest) -> RunResult:
        return self.pool_for(request.language).run(request)

    def cancel(self, run_id: str) -> bool:
        return any(pool.cancel(run_id) for pool in self.pools.values())

    def languages(self) -> list[dict[str, Any]]:
        return [
            {
                "name": language.name,
                "display_name": language.display_name,
                "version": self.pools[name].language_version if name in self.pools else None,
                "file_name": language.file_name,
                "available": name in self.pools,
            }
            for name, language in LANGUAGES.items()
        ]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: pool.stats() for name, pool in self.pools.items()}

    def health(self) -> PoolHealth:
        self._retry_start_if_due()
        if self.error is not None or not self.pools:
            message = self.error.message if self.error else "no sandbox pool"
            return PoolHealth("unhealthy", message, {})
        reports = {name: pool.health() for name, pool in self.pools.items()}
        for level in ("unhealthy", "degraded"):
            for report in reports.values():
                if report.status == level:
                    return PoolHealth(level, report.detail, {n: r.data for n, r in reports.items()})
        return PoolHealth("healthy", "ok", {n: r.data for n, r in reports.items()})

    def ping_engine(self) -> float:
        if self.client is None:
            raise self.error or SandboxError("the Docker engine is not connected")
        return engine.ping_ms(self.client)
