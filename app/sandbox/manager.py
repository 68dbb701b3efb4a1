"""One face for the service layer: a pool per installed language, started and stopped together.

If the engine or an image is missing at start-up the service still starts (auth, job history and
health keep answering); every run then fails with the same clear SandboxError, which names the
command that builds the image, and readiness reports the sandbox unhealthy. The start is tried
again, at most every RETRY_START_AFTER_S, when a run or a readiness check needs the sandbox, so
an engine started or an image built later heals the service without a restart.

With `SANDBOX_ENGINES` the pools share one EngineSet: each new container goes to the engine with
the most free places, a watcher thread checks the engines every
`SANDBOX_ENGINE_CHECK_INTERVAL_S` (at once after a failed start or run), and an engine that stops
answering is drained in every pool (see app/sandbox/engines.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Any

import docker
import structlog

from app.core.config import Settings
from app.core.errors import SandboxError
from app.sandbox import engine
from app.sandbox.budget import ContainerBudget
from app.sandbox.build_cache import BuildCache, build_key
from app.sandbox.engines import Engine, EngineSet
from app.sandbox.languages import LANGUAGES, Language, get_language
from app.sandbox.pool import ContainerPool, PoolHealth
from app.sandbox.session import SandboxSession
from app.sandbox.types import (
    CaseCallback,
    GradeRequest,
    GradeResult,
    OutputCallback,
    RunRequest,
    RunResult,
)

log = structlog.get_logger(__name__)

RETRY_START_AFTER_S = 30.0


class SandboxManager:
    def __init__(
        self,
        settings: Settings,
        client: docker.DockerClient | None = None,
        languages: dict[str, Language] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.engines: EngineSet | None = None
        self.registry = LANGUAGES if languages is None else languages
        # The one count of containers every language's pool draws from (POOL_MAX_TOTAL).
        self.budget = ContainerBudget(settings.pool_max_total)
        self.build_cache = BuildCache(
            settings.build_cache_max_mb * 1024 * 1024, shared=settings.build_cache_shared
        )
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
                engines = self._connect_engines()
                for language in self.registry.values():
                    if language.name not in self.pools and not self._closed:
                        pool = ContainerPool(self.settings, engines, language, self.budget)
                        pool.start()
                        self.pools[language.name] = pool
                self.error = None
            except SandboxError as exc:
                self.error = exc
                log.error("sandbox_unavailable", error=exc.message)

    def _connect_engines(self) -> EngineSet:
        """The engines of this node, connected once: SANDBOX_ENGINES, else the one engine of
        DOCKER_HOST (or the client given), exactly as a single-engine node always was."""
        if self.engines is not None:
            return self.engines
        capacity = self.settings.pool_max_total
        if self.client is None and self.settings.sandbox_engines:
            engines = EngineSet.connect(self.settings.sandbox_engines, capacity_each=capacity)
        else:
            if self.client is None:
                self.client = engine.connect(capacity)
            engines = EngineSet.single(self.client, capacity=capacity)
        self.client = engines.primary().client
        if engines.several:
            engines.watch(self.settings.sandbox_engine_check_interval_s, self._drain)
        self.engines = engines
        return engines

    def _drain(self, down: Engine) -> None:
        """An engine stopped answering: every pool replaces what it held there."""
        for pool in list(self.pools.values()):
            pool.drain(down)

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
        self.budget.close()
        if self.engines is not None:
            self.engines.close()
        elif self.client is not None:
            self.client.close()

    def pool_for(self, language: str) -> ContainerPool:
        """The pool of `language`; UnsupportedLanguageError or the start-up SandboxError."""
        if language not in self.registry:
            get_language(language, set(self.registry))  # raises UnsupportedLanguageError
        if language not in self.pools:
            self._retry_start_if_due()
        pool = self.pools.get(language)
        if pool is None:
            raise self.error or SandboxError(f"no sandbox pool for {language!r}")
        return pool

    def run(
        self,
        request: RunRequest,
        user_id: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> RunResult:
        """Run in the language's pool; for a compiled language, hand the agent the build a
        previous identical run of this user made, and keep the build a fresh compile makes.
        A live run's output reaches `on_output` on this thread as it is written."""
        pool = self.pool_for(request.language)
        key = self._build_key(pool, request, user_id)
        if key is not None and request.build is None:
            cached = self.build_cache.get(key)
            if cached is not None:
                request = replace(request, build=cached)
        result = pool.run(request, on_output)
        compiled = result.compile
        if (
            key is not None
            and result.build
            and compiled
            and compiled.success
            and not compiled.cached
        ):
            self.build_cache.put(key, result.build)
        return result

    def grade(
        self, request: GradeRequest, user_id: str | None = None, on_case: CaseCallback | None = None
    ) -> GradeResult:
        """Grade a program's cases in one container lease of the language's pool (see
        SandboxContainer.grade), with the build cache as for a run.

        Raises:
            PoolExhaustedError: every container stayed busy for the acquire timeout.
            SandboxError: the sandbox failed while grading; the container is replaced, and the
                cases that ended before were handed to `on_case`.
        """
        pool = self.pool_for(request.language)
        key = self._build_key(pool, request, user_id)
        if key is not None and request.build is None:
            cached = self.build_cache.get(key)
            if cached is not None:
                request = replace(request, build=cached)
        with pool.borrowed(request.run_id) as container:
            graded = container.grade(request, on_case)
        if key is not None and graded.build and request.build is None:
            self.build_cache.put(key, graded.build)
        return graded

    def _build_key(
        self, pool: ContainerPool, request: RunRequest | GradeRequest, user_id: str | None
    ) -> str | None:
        if not getattr(pool.language, "compiled", False) or not self.build_cache.max_bytes:
            return None
        return build_key(
            image_id=pool.image_id,
            language=pool.language.name,
            source=request.code,
            files=request.files,
            flags=tuple(getattr(pool.language, "compile_flags", ()) or ()),
            owner=self.build_cache.owner(user_id),
        )

    def open_session(self, language: str, *, max_file_bytes: int, max_files: int) -> SandboxSession:
        """A warm container of `language` lent out as a session (see ContainerPool.lend)."""
        pool = self.pool_for(language)
        return pool.lend(max_file_bytes=max_file_bytes, max_files=max_files)

    def cancel(self, run_id: str) -> bool:
        return any(pool.cancel(run_id) for pool in self.pools.values())

    def send_stdin(self, run_id: str, data: str, eof: bool = False) -> bool:
        """Input for an interactive run; False while no container runs it (not started, ended)."""
        return any(pool.send_stdin(run_id, data, eof) for pool in self.pools.values())

    def languages(self) -> list[dict[str, Any]]:
        """The registry as the API shows it; `warm` means a container is ready right now."""
        entries = []
        for name, language in self.registry.items():
            pool = self.pools.get(name)
            stats = pool.stats() if pool is not None else None
            entries.append(
                {
                    "name": name,
                    "display_name": language.display_name,
                    "version": pool.language_version or None if pool is not None else None,
                    # `compiled` arrives with the runtimes branch's registry; absent means no
                    "compiled": bool(getattr(language, "compiled", False)),
                    "file_name": language.file_name,
                    "available": pool is not None,
                    "warm": bool(stats and stats["available"]),
                }
            )
        return entries

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: pool.stats() for name, pool in self.pools.items()}

    def budget_stats(self) -> dict[str, Any]:
        """The shared budget with the per-language cold starts and evictions summed."""
        pools = self.stats()
        return {
            **self.budget.stats(),
            "cold_starts": sum(int(p["cold_starts"]) for p in pools.values()),
            "evictions": sum(int(p["evictions"]) for p in pools.values()),
            "build_cache": self.build_cache.stats(),
            # where the sandboxes run: one entry per engine (SANDBOX_ENGINES), or the one engine
            "engines": self.engines.stats() if self.engines is not None else [],
        }

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
        if self.engines is None:
            raise self.error or SandboxError("the Docker engine is not connected")
        client = self.engines.primary().client
        assert client is not None
        return engine.ping_ms(client)

    def engines_health(self) -> PoolHealth:
        """Readiness of the engines: with several, which are down or lack an image."""
        latency = self.ping_engine()
        assert self.engines is not None
        status, detail = self.engines.health()
        data: dict[str, Any] = {"latency_ms": round(latency, 2)}
        if self.engines.several:
            data["engines"] = self.engines.stats()
        return PoolHealth(status, detail, data)  # type: ignore[arg-type]
