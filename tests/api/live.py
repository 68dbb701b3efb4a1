"""The app served by uvicorn on a loopback port, for tests that talk to it as real clients do.

One lifespan (one pool, one job runner) serves every request of a module; an ASGI transport
would run the lifespan per call, and a generated client needs a real URL anyway.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from app.core.config import Settings
from app.core.migrations import upgrade_to_head
from app.main import create_app
from tests.auth.helpers import cheap_hashes


@dataclass
class LiveServer:
    app: FastAPI
    base_url: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve(settings: Settings) -> Iterator[LiveServer]:
    """Migrate, then serve `create_app(settings)` on 127.0.0.1 until the block ends."""
    upgrade_to_head(settings.database_url)
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    with cheap_hashes():
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "the server failed to start"
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.05)
        try:
            yield LiveServer(app=app, base_url=f"http://127.0.0.1:{port}")
        finally:
            server.should_exit = True
            thread.join(timeout=30)
