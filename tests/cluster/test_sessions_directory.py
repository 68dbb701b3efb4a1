"""The session directory in Redis (app/sessions/directory.py) against the real test Redis: two
"nodes" (two directories) count one user's sessions once, an owner that stops renewing lapses,
and an unreachable Redis is refused (closed), never guessed."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from app.sessions.directory import DirectoryUnavailableError, RedisSessionDirectory

pytestmark = pytest.mark.redis
TTL_S = 1.0


def node(url: str, name: str, namespace: str) -> RedisSessionDirectory:
    return RedisSessionDirectory(
        url, node_id=name, node_url=f"http://{name}:8000", ttl_s=TTL_S, namespace=namespace
    )


def test_two_nodes_count_a_users_sessions_once_and_a_dead_owner_lapses(redis_url: str) -> None:
    namespace = f"warmbox-test-{uuid.uuid4().hex[:12]}"  # reruns never see each other's keys

    async def scenario() -> None:
        a, b = node(redis_url, "a", namespace), node(redis_url, "b", namespace)
        try:
            on_a, on_b, refused = (str(uuid.uuid4()) for _ in range(3))
            assert await a.reserve("alice", on_a, limit=2)
            assert await b.reserve("alice", on_b, limit=2)
            assert not await b.reserve("alice", refused, limit=2)
            assert not await a.reserve("alice", refused, limit=2)
            assert await a.reserve("bob", refused, limit=2)  # other users are not affected
            await a.publish(on_a, "alice")
            await b.publish(on_b, "alice")
            owner = await a.lookup(on_b)
            assert owner is not None
            assert (owner.node_id, owner.url, owner.user_id) == ("b", "http://b:8000", "alice")
            assert await a.held([on_a, on_b, refused]) == {on_a, on_b}

            for _ in range(4):  # b died: only a renews its own
                await asyncio.sleep(TTL_S / 3)
                await a.renew([(on_a, "alice")])
            assert await a.lookup(on_b) is None
            assert await b.lookup(on_a) is not None
            assert await a.reserve("alice", str(uuid.uuid4()), limit=2)  # b's no longer counts
            await a.withdraw(on_a, "alice")
            assert await b.lookup(on_a) is None
        finally:
            await a.close()
            await b.close()

    asyncio.run(scenario())


def test_concurrent_creates_on_two_nodes_pass_the_limit_exactly(redis_url: str) -> None:
    namespace = f"warmbox-test-{uuid.uuid4().hex[:12]}"

    async def scenario() -> list[bool]:
        a, b = node(redis_url, "a", namespace), node(redis_url, "b", namespace)
        try:
            return list(
                await asyncio.gather(
                    *(
                        directory.reserve("carol", str(uuid.uuid4()), limit=3)
                        for directory in (a, b) * 5
                    )
                )
            )
        finally:
            await a.close()
            await b.close()

    assert sum(asyncio.run(scenario())) == 3


def test_an_unreachable_redis_is_refused_not_guessed() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        directory = node(f"redis://127.0.0.1:{port}/0", "a", "warmbox-test-down")
        try:
            with pytest.raises(DirectoryUnavailableError):
                await directory.reserve("alice", str(uuid.uuid4()), limit=2)
            with pytest.raises(DirectoryUnavailableError):
                await directory.lookup(str(uuid.uuid4()))
            with pytest.raises(DirectoryUnavailableError):
                await directory.renew([(str(uuid.uuid4()), "alice")])
            await directory.withdraw(str(uuid.uuid4()), "alice")  # only logged: entries lapse
        finally:
            await directory.close()

    asyncio.run(scenario())
