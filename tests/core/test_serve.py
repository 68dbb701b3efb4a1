"""`python -m app.serve` fills in NODE_URL for a clustered node that was given none."""

from __future__ import annotations

import socket

from app.core.config import Settings
from app.serve import default_node_url


def settings(**values: str) -> Settings:
    return Settings(_env_file=None, environment="test", **values)  # type: ignore[call-arg]


def test_a_single_node_announces_nothing() -> None:
    assert default_node_url(settings(), "0.0.0.0", 8000) == ""  # noqa: S104


def test_a_set_node_url_wins() -> None:
    given = settings(redis_url="redis://127.0.0.1:6379/0", node_url="http://10.0.0.5:8000")
    assert default_node_url(given, "0.0.0.0", 9000) == "http://10.0.0.5:8000"  # noqa: S104


def test_a_clustered_node_announces_its_bound_address_and_port() -> None:
    clustered = settings(redis_url="redis://127.0.0.1:6379/0")
    assert default_node_url(clustered, "127.0.0.1", 8101) == "http://127.0.0.1:8101"


def test_a_node_bound_to_every_address_announces_its_host_names_address() -> None:
    clustered = settings(redis_url="redis://127.0.0.1:6379/0")
    address = socket.gethostbyname(socket.gethostname())
    assert default_node_url(clustered, "0.0.0.0", 10000) == f"http://{address}:10000"  # noqa: S104
