"""Which bookkeeping a node builds at start-up: Redis for what nodes share when REDIS_URL is set,
this process's memory otherwise (one node stays exactly as simple as before)."""

from __future__ import annotations

import pytest
from limits.storage import MemoryStorage, RedisStorage

from app.events.log import InMemoryEventLog
from app.events.redis_log import RedisEventLog
from app.jobs.shares import InMemoryRunShares
from app.jobs.shares_redis import RedisRunShares

pytestmark = pytest.mark.redis


def test_a_clustered_node_shares_limits_shares_and_events_through_redis(
    make_settings, make_client, redis_url: str
) -> None:
    settings = make_settings(redis_url=redis_url, rate_limit_enabled=True, app_name="wb-wiring")
    with make_client(settings) as client:
        state = client.app.state
        assert isinstance(state.run_shares, RedisRunShares)
        assert isinstance(state.event_log, RedisEventLog)
        assert isinstance(state.run_event_log, InMemoryEventLog)  # a WebSocket run's own node
        assert isinstance(state.rate_limits.limiter._storage, RedisStorage)
        assert client.get("/api/version").status_code == 200


def test_a_single_node_keeps_them_in_memory(make_settings, make_client) -> None:
    with make_client(make_settings(rate_limit_enabled=True)) as client:
        state = client.app.state
        assert isinstance(state.run_shares, InMemoryRunShares)
        assert isinstance(state.event_log, InMemoryEventLog)
        assert state.run_event_log is state.event_log
        assert isinstance(state.rate_limits.limiter._storage, MemoryStorage)


def test_an_explicit_rate_limit_storage_wins_over_redis_url(make_settings) -> None:
    settings = make_settings(
        redis_url="redis://10.0.0.9:6379/0", rate_limit_storage_uri="memory://"
    )
    assert settings.effective_rate_limit_storage_uri == "memory://"
    assert make_settings(redis_url="redis://r:6379/1").effective_rate_limit_storage_uri == (
        "redis://r:6379/1"
    )
