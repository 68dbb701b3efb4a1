"""Password hashing is bounded: a few hashes at once, a short line with a deadline, then 503."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from app.auth import hashing
from tests.auth.helpers import DEFAULT_PASSWORD, create_user
from tests.auth.live_server import live_server_process

LOGIN = "/api/v1/auth/login"
WRONG = {"username": "alice", "password": "wrong-guess"}


@contextmanager
def every_slot_busy(gate: hashing.HashGate) -> Iterator[None]:
    """Keep every hashing thread of `gate` busy until the block ends."""
    release, running = threading.Event(), threading.Semaphore(0)

    def hold() -> None:
        running.release()
        release.wait()

    holders = [threading.Thread(target=gate.run, args=(hold,)) for _ in range(gate.slots)]
    for holder in holders:
        holder.start()
    for _ in holders:
        assert running.acquire(timeout=10)
    try:
        yield
    finally:
        release.set()
        for holder in holders:
            holder.join()


def test_a_login_that_gets_no_hashing_slot_in_time_answers_503(
    make_settings: Callable, make_client: Callable
) -> None:
    settings = make_settings(password_hash_concurrency=1, password_hash_wait_s=0.3)
    with make_client(settings) as client:
        create_user(client, username="alice")
        with every_slot_busy(hashing.current_gate()):
            started = time.monotonic()
            refused = client.post(LOGIN, json=WRONG)
            waited = time.monotonic() - started
        after = client.post(LOGIN, json={"username": "alice", "password": DEFAULT_PASSWORD})

    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert int(refused.headers["retry-after"]) >= 1
    assert waited >= 0.3
    assert after.status_code == 200


def test_beyond_the_queue_a_login_is_refused_at_once(
    make_settings: Callable, make_client: Callable
) -> None:
    settings = make_settings(
        password_hash_concurrency=1, password_hash_queue_max=0, password_hash_wait_s=30
    )
    with make_client(settings) as client, every_slot_busy(hashing.current_gate()):
        started = time.monotonic()
        refused = client.post(LOGIN, json=WRONG)
        waited = time.monotonic() - started

    assert refused.status_code == 503
    assert waited < 5


def test_no_more_hashes_than_slots_run_at_once() -> None:
    gate = hashing.HashGate(slots=2, queue_max=10, wait_s=10)
    running, peak, lock = 0, 0, threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    with ThreadPoolExecutor(max_workers=12) as pool:
        for future in [pool.submit(gate.run, work) for _ in range(12)]:
            future.result()
    gate.shutdown()

    assert peak == 2


def test_hashing_threads_yield_the_cpu_to_the_event_loop() -> None:
    gate = hashing.HashGate(slots=1, queue_max=0, wait_s=5)
    nice = gate.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    gate.shutdown()

    assert nice >= os.getpriority(os.PRIO_PROCESS, 0) + 1


@pytest.mark.slow
def test_concurrent_failed_logins_keep_the_server_memory_bounded(tmp_path: Path) -> None:
    """Real argon2id (64 MiB a hash): unbounded, 12 at once add about 770 MB."""
    with live_server_process(tmp_path, PASSWORD_HASH_CONCURRENCY="2") as (base_url, process):
        server = psutil.Process(process.pid)
        with httpx.Client(base_url=base_url, timeout=60) as http:
            credentials = {"username": "alice", "password": DEFAULT_PASSWORD}
            assert http.post("/api/v1/auth/register", json=credentials).status_code == 201
            baseline = server.memory_info().rss
            peak = baseline
            with ThreadPoolExecutor(max_workers=12) as pool:
                futures = [pool.submit(http.post, LOGIN, json=WRONG) for _ in range(12)]
                while not all(future.done() for future in futures):
                    peak = max(peak, server.memory_info().rss)
                    time.sleep(0.01)
            answers = [future.result().status_code for future in futures]

    assert set(answers) <= {401, 503}
    assert (peak - baseline) / 2**20 < 200


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1)],
)
def test_hashing_threads_follow_the_cgroup_cpu_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str, expected: int | None
) -> None:
    """A container limited with --cpus sees every host core in its affinity mask; the gate must
    size itself by the quota, or each extra thread holds another 64 MiB argon2 buffer."""
    cpu_max_file = tmp_path / "cpu.max"
    cpu_max_file.write_text(cpu_max)
    monkeypatch.setattr(hashing, "CGROUP_CPU_MAX", cpu_max_file)
    affinity = len(os.sched_getaffinity(0))
    assert hashing.available_cores() == min(affinity, expected or affinity)
