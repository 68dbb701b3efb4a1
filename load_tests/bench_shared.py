"""Benchmark: what sharing through Redis costs a cluster (issue 14).

    uv run python -m load_tests.bench_shared [--events 300] [--shares 1000]

Starts its own `redis-server` on a free loopback port. Two `RedisEventLog`s stand for two nodes:
a thread publishes on node a every 10 ms while a follower on node b's event loop waits and
replays, and the time from publish to replay is one sample (notice channel, the follower's
read into its mirror in a worker thread, the loop). Then a share's acquire + release, in memory
and through `RedisRunShares` (one Lua script and one ZREM + PUBLISH).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from app.events.redis_log import RedisEventLog
from app.jobs.shares import InMemoryRunShares, RunShares
from app.jobs.shares_redis import RedisRunShares
from load_tests.bench_api import free_port
from load_tests.benchlib import machine, summary_ms, write_result


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        try:
            yield url
        finally:
            client.close()
            process.terminate()
            process.wait(timeout=10)


def event_latencies(url: str, count: int) -> list[float]:
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    node_a = RedisEventLog(url, namespace=namespace)
    node_b = RedisEventLog(url, namespace=namespace)
    node_a.open("job", "bench", output_limit=1 << 20)
    sent: dict[int, float] = {}

    def publish() -> None:
        time.sleep(0.5)  # the follower is waiting first
        for number in range(1, count + 1):
            sent[number] = time.monotonic()
            node_a.publish("job", "bench", "status", {"n": number})
            time.sleep(0.01)

    async def follow() -> list[float]:
        samples: list[float] = []
        after = 0
        while after < count:
            await node_b.wait("job", "bench", after, 5)
            for event in node_b.replay("job", "bench", after).events:
                samples.append(time.monotonic() - sent[event.id])
                after = event.id
        return samples

    threading.Thread(target=publish, daemon=True).start()
    try:
        return asyncio.run(follow())
    finally:
        node_a.close()
        node_b.close()


def share_costs(shares: RunShares, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        ticket = shares.try_acquire("bench-user", run_timeout_s=10)
        assert ticket is not None
        shares.release(ticket)
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--shares", type=int, default=1000)
    arguments = parser.parse_args()
    with redis_server() as url:
        events = summary_ms(event_latencies(url, arguments.events))
        redis_shares = RedisRunShares(url, 2, namespace=f"bench-{uuid.uuid4().hex[:8]}")
        try:
            in_redis = summary_ms(share_costs(redis_shares, arguments.shares))
        finally:
            redis_shares.close()
    in_memory = summary_ms(share_costs(InMemoryRunShares(2), arguments.shares))
    result = {
        "machine": machine(),
        "event_publish_to_follower_on_another_node": events,
        "share_acquire_release_redis": in_redis,
        "share_acquire_release_memory": in_memory,
    }
    print(f"event a -> b:             {events}")
    print(f"share in Redis:           {in_redis}")
    print(f"share in memory:          {in_memory}")
    print(f"written to {write_result('shared', result)}")


if __name__ == "__main__":
    main()
