"""Prometheus metrics: HTTP metrics from prometheus-fastapi-instrumentator plus the product's own.

Each app owns its CollectorRegistry (tests build many apps in one process; the global registry
would refuse the second set of names). Pool and queue figures are read at scrape time from the
sandbox manager and the job queue, so they can never drift from the truth.

`/metrics` is open when METRICS_TOKEN is empty (serve it on a private port), otherwise it needs
`Authorization: Bearer <METRICS_TOKEN>`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.routing import iter_route_contexts
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator.middleware import PrometheusInstrumentatorMiddleware
from starlette.middleware import Middleware
from starlette.routing import Match

from app.core.config import Settings
from app.core.errors import AuthenticationError

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The registry of one app and the metrics the service records as it runs code."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.executions = Counter(
            "warmbox_executions",
            "Runs by language, mode (sync/async) and outcome (the job's final status).",
            ["language", "mode", "outcome"],
            registry=self.registry,
        )
        self.duration = PromHistogram(
            "warmbox_execution_duration_seconds",
            "Time the code ran inside its sandbox.",
            ["language"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def observe_run(
        self, *, language: str, mode: str, outcome: str, duration_s: float | None
    ) -> None:
        self.executions.labels(language=language, mode=mode, outcome=outcome).inc()
        if duration_s is not None:
            self.duration.labels(language=language).observe(duration_s)


class RuntimeCollector(Collector):
    """Pool and queue gauges read from the live app state at each scrape."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        yield from self._pool_metrics(getattr(self.app.state, "sandbox", None))
        queue = getattr(self.app.state, "job_queue", None)
        depth = GaugeMetricFamily("warmbox_job_queue_depth", "Jobs waiting in the queue.")
        running = GaugeMetricFamily("warmbox_jobs_running", "Jobs running now.")
        users = GaugeMetricFamily(
            "warmbox_job_queue_users", "Users with queued jobs, served in turn."
        )
        if queue is not None:
            stats = queue.stats()
            depth.add_metric([], stats["depth"])
            running.add_metric([], stats["running"])
            users.add_metric([], stats["users_waiting"])
        yield depth
        yield running
        yield users

    def _pool_metrics(self, sandbox: Any) -> Iterator[Metric]:
        stats: dict[str, dict[str, Any]] = sandbox.stats() if sandbox is not None else {}
        gauges = {
            key: GaugeMetricFamily(f"warmbox_pool_{key}", text, labels=["language"])
            for key, text in (
                ("available", "Idle warm containers."),
                ("in_use", "Containers running or resetting."),
                ("total", "Containers in the pool."),
                ("starting", "Containers being started."),
                ("budget_in_use", "Units of the shared budget (POOL_MAX_TOTAL) held."),
            )
        }
        counters = {
            key: CounterMetricFamily(f"warmbox_pool_{key}", text, labels=["language"])
            for key, text in (
                ("resets", "Containers reset clean after a run."),
                ("reset_failures", "Resets that failed and replaced the container."),
                ("exhausted", "Acquires that timed out with every container busy."),
                ("created", "Containers created."),
                ("cold_starts", "Containers started for a run that found nothing warm."),
                ("evictions", "Idle containers given up for another language's waiting run."),
            )
        }
        wait = GaugeMetricFamily(
            "warmbox_pool_acquire_wait_seconds",
            "Time to get a container over the recent acquires (stat: avg or p95).",
            labels=["language", "stat"],
        )
        for language, pool in stats.items():
            for key, family in gauges.items():
                family.add_metric([language], pool[key])
            for key, family in counters.items():
                family.add_metric([language], pool[key])
            for stat in ("avg", "p95"):
                wait.add_metric([language, stat], pool["acquire_wait"][f"{stat}_ms"] / 1000)
        yield from gauges.values()
        yield from counters.values()
        yield wait


class _RouteTemplateMiddleware(PrometheusInstrumentatorMiddleware):
    """The instrumentator's middleware, naming handlers by route template on FastAPI's routing.

    Its own lookup reads `route.path` off `app.routes`, which FastAPI now fills with included
    routers that have no path (AttributeError on every request); iter_route_contexts walks them.
    That walk matches the request against every route before the router does it again (about a
    quarter of a millisecond a request), so its answer is kept per method and path: the routes are
    fixed once the app serves, and the cache is emptied when it holds HANDLER_CACHE_SIZE paths
    (ids in paths make new ones all the time).
    """

    HANDLER_CACHE_SIZE = 4096

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handlers: dict[tuple[str, str], tuple[str, bool]] = {}

    def _get_handler(self, request: Request) -> tuple[str, bool]:
        key = (request.method, request.scope["path"])
        handler = self._handlers.get(key)
        if handler is None:
            handler = self._match_handler(request)
            if len(self._handlers) >= self.HANDLER_CACHE_SIZE:
                self._handlers.clear()
            self._handlers[key] = handler
        return handler

    @staticmethod
    def _match_handler(request: Request) -> tuple[str, bool]:
        for context in iter_route_contexts(request.app.routes):
            match, _ = context.matches(request.scope)
            if match is Match.FULL:
                return str(context.path_format or context.path), True
        return request.url.path, False


def _check_token(request: Request, token: str) -> None:
    if not token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise AuthenticationError("the metrics endpoint needs 'Authorization: Bearer <token>'")


def install_metrics(app: FastAPI, settings: Settings) -> None:
    """HTTP instrumentation, the runtime collector and `GET /metrics`; nothing when disabled."""
    if not settings.metrics_enabled:
        app.state.metrics = None
        return
    metrics = Metrics()
    metrics.registry.register(RuntimeCollector(app))
    app.state.metrics = metrics
    Instrumentator(
        registry=metrics.registry,
        excluded_handlers=["/metrics", "/health", "/health/ready"],
        should_group_untemplated=True,
    ).instrument(app, metric_namespace="warmbox")
    app.user_middleware = [
        Middleware(_RouteTemplateMiddleware, *entry.args, **entry.kwargs)
        if entry.cls is PrometheusInstrumentatorMiddleware
        else entry
        for entry in app.user_middleware
    ]
    router = APIRouter(include_in_schema=False)

    @router.get("/metrics")
    def metrics_endpoint(request: Request) -> Response:
        _check_token(request, settings.metrics_token)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(router)


async def get_metrics(request: Request) -> Metrics | None:
    """None when METRICS_ENABLED=false."""
    return getattr(request.app.state, "metrics", None)


MetricsDep = Annotated[Metrics | None, Depends(get_metrics)]
