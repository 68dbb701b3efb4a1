"""X-Forwarded-For is believed only from TRUSTED_PROXIES, on the real server as it is started."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.auth.live_server import REPO_ROOT, UVICORN_COMMAND, live_server

VERSION = "/api/version"
pytestmark = pytest.mark.slow  # each test starts a real server
LIMITED = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_DEFAULT": "3/minute"}


def _rotating(base_url: str, count: int) -> list[int]:
    with httpx.Client(base_url=base_url, timeout=10) as http:
        return [
            http.get(VERSION, headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
            for n in range(count)
        ]


def test_rotating_forwarded_for_from_loopback_does_not_reset_the_limit(tmp_path: Path) -> None:
    with live_server(tmp_path, **LIMITED) as base_url:
        answers = _rotating(base_url, 4)

    assert answers == [200, 200, 200, 429]


def test_a_trusted_proxy_is_believed(tmp_path: Path) -> None:
    with live_server(tmp_path, TRUSTED_PROXIES="127.0.0.1", **LIMITED) as base_url:
        answers = _rotating(base_url, 4)
        with httpx.Client(base_url=base_url, timeout=10) as http:
            same = [
                http.get(VERSION, headers={"X-Forwarded-For": "198.51.100.1"}).status_code
                for _ in range(4)
            ]

    assert answers == [200] * 4  # four clients behind the proxy, four budgets
    assert same == [200, 200, 200, 429]


def test_uvicorn_started_by_hand_would_believe_any_loopback_caller(tmp_path: Path) -> None:
    """Why app.serve exists: plain uvicorn trusts 127.0.0.1's forwarded headers by default."""
    with live_server(tmp_path, command=UVICORN_COMMAND, **LIMITED) as base_url:
        answers = _rotating(base_url, 4)

    assert answers == [200] * 4


def test_every_way_the_service_starts_goes_through_app_serve() -> None:
    starters = {
        "scripts/run.sh": r"python -m app\.serve",
        "Dockerfile": r"CMD \[.*python -m app\.serve",
        "Dockerfile.dev": r"CMD \[.*python -m app\.serve",
        "load_tests/run_load.sh": r"python -m app\.serve",
    }
    for name, pattern in starters.items():
        text = (REPO_ROOT / name).read_text()
        assert re.search(pattern, text), name
        assert "uvicorn app.main" not in text, name
    # render.yaml builds the Dockerfile and must not override its command.
    assert "dockerCommand" not in (REPO_ROOT / "render.yaml").read_text()
