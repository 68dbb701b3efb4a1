"""The shared container budget on a real engine: several languages, one POOL_MAX_TOTAL.

Until the other runtimes' images exist, the python image is registered under more names here
("alpha", "beta"): each is a real second pool with real containers, only its image is python's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import docker
import pytest

from app.sandbox.languages import LANGUAGES
from app.sandbox.manager import SandboxManager
from app.sandbox.types import RunRequest, RunResult
from tests.sandbox.conftest import sandbox_settings

pytestmark = pytest.mark.docker

REGISTRY = {
    "python": LANGUAGES["python"],
    **{
        name: replace(LANGUAGES["python"], name=name, display_name=name.title(), folder="python")
        for name in ("alpha", "beta")
    },
}

ManagerFactory = Callable[..., SandboxManager]


@pytest.fixture
def make_manager(docker_client: docker.DockerClient) -> Iterator[ManagerFactory]:
    managers: list[SandboxManager] = []

    def factory(**overrides: Any) -> SandboxManager:
        values: dict[str, Any] = {"pool_max_size": 3, "pool_acquire_timeout_s": 60.0}
        values.update(overrides)
        manager = SandboxManager(sandbox_settings(**values), docker_client, REGISTRY)
        managers.append(manager)
        manager.start()
        assert manager.error is None, manager.error
        return manager

    yield factory
    for manager in managers:
        manager.shutdown()


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def containers_of(docker_client: docker.DockerClient, manager: SandboxManager) -> int:
    ids = {pool.pool_id for pool in manager.pools.values()}
    # the low-level list inspects nothing, so a container removed meanwhile cannot fail it
    listed = docker_client.api.containers(all=True, filters={"label": "warmbox.pool"})
    return sum(1 for c in listed if (c.get("Labels") or {}).get("warmbox.pool") in ids)


def run(manager: SandboxManager, language: str, code: str = "print('ok')") -> RunResult:
    return manager.run(RunRequest(code=code, language=language, timeout_s=20.0))


def run_in_thread(
    manager: SandboxManager, language: str, code: str
) -> tuple[threading.Thread, dict]:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = run(manager, language, code)
        except Exception as exc:  # the assertion names it
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def test_budget_never_exceeded_under_concurrent_demand(make_manager, docker_client):
    manager = make_manager(pool_max_total=3, pool_initial_size=1)
    seen: list[int] = []
    stop = threading.Event()

    def sampler() -> None:
        while not stop.is_set():
            seen.append(max(containers_of(docker_client, manager), manager.budget.in_use()))
            time.sleep(0.05)

    watcher = threading.Thread(target=sampler)
    watcher.start()
    runs = [
        run_in_thread(manager, language, f"import time; time.sleep(0.2); print('{language}')")
        for _ in range(3)
        for language in REGISTRY
    ]
    for thread, _ in runs:
        thread.join(timeout=180)
    stop.set()
    watcher.join()
    outcomes = [outcome for _, outcome in runs]
    assert all("result" in o and o["result"].exit_code == 0 for o in outcomes), outcomes
    assert max(seen) <= 3
    assert manager.budget.stats()["peak"] <= 3
    for _, outcome in runs:
        assert outcome["result"].stdout.strip() in REGISTRY


def test_nine_languages_all_run_on_a_budget_of_six(docker_client):
    """Nine names (python's image under each) asking at once, twice over: every run succeeds
    and no more than six containers ever exist."""
    registry = {
        name: replace(LANGUAGES["python"], name=name, display_name=name, folder="python")
        for name in (f"lang{index}" for index in range(9))
    }
    settings = sandbox_settings(
        pool_max_total=6, pool_min_size=0, pool_initial_size=0, pool_acquire_timeout_s=120.0
    )
    manager = SandboxManager(settings, docker_client, registry)
    manager.start()
    try:
        for _ in range(2):
            runs = [run_in_thread(manager, name, f"print('{name}')") for name in registry]
            for thread, _ in runs:
                thread.join(timeout=300)
            for name, (_, outcome) in zip(registry, runs, strict=True):
                assert outcome.get("result") is not None, outcome
                assert outcome["result"].stdout == f"{name}\n"
            assert manager.budget.stats()["peak"] <= 6
            assert containers_of(docker_client, manager) <= 6
    finally:
        manager.shutdown()


def test_unused_language_starts_cold_and_is_counted(make_manager):
    manager = make_manager(pool_max_total=3)
    assert manager.pools["beta"].stats()["total"] == 0
    result = run(manager, "beta")
    assert result.exit_code == 0
    assert result.stdout == "ok\n"
    assert manager.pools["beta"].stats()["cold_starts"] == 1
    assert manager.budget_stats()["cold_starts"] == 1
    assert manager.budget.in_use("beta") >= 1  # its run, perhaps one warmed ahead
    # the second run finds it warm: no further cold start
    assert run(manager, "beta").exit_code == 0
    assert manager.pools["beta"].stats()["cold_starts"] == 1


def test_idle_language_gives_back_and_minimum_stays_warm(make_manager):
    manager = make_manager(
        pool_max_total=3,
        pool_min_warm="python=1,beta=1",
        pool_idle_timeout_s=0.3,
        pool_language_warm_s=0.3,
    )
    assert run(manager, "alpha").exit_code == 0
    assert run(manager, "beta").exit_code == 0
    assert wait_until(lambda: manager.pools["alpha"].stats()["available"] == 1)
    time.sleep(0.5)
    for pool in manager.pools.values():
        pool.reclaim_idle()
    assert manager.pools["alpha"].stats()["total"] == 0
    assert manager.pools["alpha"].stats()["reclaimed"] == 1
    assert manager.budget.in_use("alpha") == 0
    # python and beta keep their minimum however idle they are
    assert manager.pools["python"].stats()["total"] == 1
    assert manager.pools["beta"].stats()["total"] == 1


def test_recently_used_language_stays_warm(make_manager):
    manager = make_manager(pool_max_total=3, pool_idle_timeout_s=0.3, pool_language_warm_s=600)
    assert run(manager, "alpha").exit_code == 0
    assert wait_until(lambda: manager.pools["alpha"].stats()["available"] == 1)
    time.sleep(0.5)
    manager.pools["alpha"].reclaim_idle()
    assert manager.pools["alpha"].stats()["total"] == 1


def test_full_budget_takes_an_idle_container_of_another_language(make_manager):
    manager = make_manager(pool_max_total=1, pool_initial_size=1, pool_acquire_timeout_s=30.0)
    assert manager.pools["python"].stats()["available"] == 1
    started = time.monotonic()
    result = run(manager, "alpha")
    assert result.exit_code == 0
    assert time.monotonic() - started < 25  # it did not wait for an acquire timeout
    assert manager.pools["python"].stats()["evictions"] == 1
    assert manager.pools["python"].stats()["total"] == 0
    assert manager.pools["alpha"].stats()["cold_starts"] == 1
    assert manager.budget_stats()["evictions"] == 1
    assert manager.budget.stats()["peak"] == 1


def test_released_container_goes_to_the_longest_waiter_of_another_language(
    make_manager, docker_client
):
    manager = make_manager(pool_max_total=1, pool_initial_size=1)
    busy, busy_outcome = run_in_thread(
        manager, "python", "import time; time.sleep(3); print('python')"
    )
    assert wait_until(lambda: manager.pools["python"].stats()["in_use"] == 1)
    waiter, waiter_outcome = run_in_thread(manager, "alpha", "print('alpha')")
    assert wait_until(lambda: manager.budget.stats()["waiting"] == 1)
    assert manager.pools["alpha"].stats()["total"] == 0  # nothing to evict: python is busy
    busy.join(timeout=60)
    waiter.join(timeout=60)
    assert busy_outcome["result"].stdout == "python\n"
    assert waiter_outcome["result"].stdout == "alpha\n", waiter_outcome
    assert manager.pools["python"].stats()["evictions"] == 1
    assert manager.pools["alpha"].stats()["cold_starts"] == 1
    assert manager.budget.stats()["peak"] == 1
    assert containers_of(docker_client, manager) <= 1


def test_languages_report_warm_and_stats_report_the_budget(make_manager):
    manager = make_manager(pool_max_total=3, pool_initial_size=1)
    warm = {entry["name"]: entry["warm"] for entry in manager.languages()}
    assert warm == {"python": True, "alpha": False, "beta": False}
    budget = manager.budget_stats()
    assert budget["max_total"] == 3
    assert budget["in_use"] == 1
    assert budget["by_language"] == {"python": 1}
    assert manager.stats()["python"]["budget_in_use"] == 1


def test_shutdown_gives_every_unit_back(make_manager):
    manager = make_manager(pool_max_total=3, pool_initial_size=2)
    assert run(manager, "alpha").exit_code == 0
    pools = list(manager.pools.values())
    for pool in pools:
        pool.shutdown()
    assert manager.budget.in_use() == 0
