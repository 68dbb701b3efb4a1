"""One way to open Redis for every part that shares state between nodes (issue 14).

Short socket timeouts: a caller that finds Redis unreachable learns it within half a second and
falls back as its own docstring says (open or closed), instead of hanging a request.
"""

from __future__ import annotations

import redis

SOCKET_TIMEOUT_S = 0.5
HEALTH_CHECK_INTERVAL_S = 15


def connect(url: str) -> redis.Redis:
    """A client with bounded waits; connections open lazily, so this never fails on its own."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )
