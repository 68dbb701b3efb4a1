"""`python -m app.serve`: the one way every deployment starts the API (run script, Dockerfile,
load tests).

uvicorn believes `X-Forwarded-For` from 127.0.0.1 by default (`--forwarded-allow-ips`), so behind
nothing at all a local caller could name any address and reset every per-address limit by
rotating the header. Here uvicorn's proxy headers are always off: the ASGI peer is the TCP peer,
and the app alone decides, from TRUSTED_PROXIES (see `app/ratelimit/keys.py`), whose forwarded
address it believes. HOST, PORT and WEB_CONCURRENCY are the usual process variables (Render and
Docker set PORT).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

import uvicorn

from app.core.config import Settings, get_settings

APP = "app.main:app_factory"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    parser.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    return parser.parse_args(argv)


def default_node_url(settings: Settings, host: str, port: int) -> str:
    """How the other nodes reach this one when NODE_URL is not set.

    A Render Blueprint or a Kubernetes Deployment gives every instance the same environment, so
    NODE_URL cannot be written per instance: a clustered node then announces the address its
    host name resolves to (the private network's) and its port. Empty on a single node."""
    if not settings.clustered or settings.node_url:
        return settings.node_url
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 (comparing, not binding)
        host = socket.gethostbyname(socket.gethostname())
    return f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> None:
    arguments = _arguments(argv)
    settings = get_settings()  # refuse unsafe settings here, with the name, before uvicorn starts
    node_url = default_node_url(settings, arguments.host, arguments.port)
    if node_url != settings.node_url:
        os.environ["NODE_URL"] = node_url  # the app's own get_settings() reads it anew
        get_settings.cache_clear()
    if arguments.workers != 1 and not arguments.reload:
        # Two workers of one process share its NODE_ID: each would take the other's leased work
        # for its own at start-up, and without REDIS_URL double every share and rate limit. Run
        # more nodes (each its own NODE_ID) or scale the pool instead (README, Operations).
        raise SystemExit(
            f"warmbox: WEB_CONCURRENCY={arguments.workers}: run exactly one worker per database"
        )
    if settings.environment.value == "production" and not settings.trusted_proxies:
        print(  # before logging is configured; operators read this at start
            "warmbox: warning: TRUSTED_PROXIES is empty: behind a load balancer every client shares"
            " the balancer's address and its per-address limits",
            file=sys.stderr,
        )
    uvicorn.run(
        APP,
        factory=True,
        host=arguments.host,
        port=arguments.port,
        workers=None if arguments.reload else arguments.workers,
        reload=arguments.reload,
        proxy_headers=False,
        server_header=False,
        # A WebSocket message far over the body limit is refused (1009) before it is buffered;
        # one a little over it reaches /code/ws, which answers with the error body.
        ws_max_size=settings.max_request_body_bytes + 64 * 1024,
    )


if __name__ == "__main__":
    main()
