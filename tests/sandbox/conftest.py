"""Fixtures for sandbox tests: a real Docker engine, the real image, real pools. No stand-ins."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from app.core.config import Settings
from app.sandbox.languages import IMAGE_BUILD_COMMAND, LANGUAGES
from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest, RunResult

PYTHON = LANGUAGES["python"]

# What a run sees of its container; equal to a fresh container's view when nothing leaked.
PROBE = r"""
import json, os
def ipc(kind):
    with open(f"/proc/sysvipc/{kind}") as table:
        return len([row for row in table.read().splitlines()[1:] if row.strip()])
me = os.getpid()
print(json.dumps({
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)),
    "tmp": sorted(os.listdir("/tmp")),
    "cwd": os.getcwd(),
    "env": dict(os.environ),
    "ipc": [ipc(kind) for kind in ("shm", "msg", "sem")],
    "mqueue": sorted(os.listdir("/dev/mqueue")),
    "uid": os.getuid(),
}))
"""
CLEAN_STATE = {
    "pids": [],
    "tmp": ["main.py"],
    "cwd": "/tmp",
    "ipc": [0, 0, 0],
    "mqueue": [],
    "uid": 10001,
}
ALLOWED_ENV = {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "TMPDIR"}


def sandbox_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "pool_initial_size": 1,
        "pool_min_size": 1,
        "pool_max_size": 1,
        "pool_acquire_timeout_s": 20.0,
        "pool_health_check_interval_s": 3600.0,
        "pool_idle_reclaim_interval_s": 3600.0,
        "run_output_limit_bytes": 64 * 1024,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers ({exc}); run scripts/setup.sh first")
    image = sandbox_settings().sandbox_python_image
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        pytest.fail(f"sandbox image {image} is missing; build it with {IMAGE_BUILD_COMMAND}")
    yield client
    client.close()


PoolFactory = Callable[..., ContainerPool]


@pytest.fixture
def make_pool(docker_client: docker.DockerClient) -> Iterator[PoolFactory]:
    """Start pools with the given settings; every one is shut down (containers removed) after."""
    pools: list[ContainerPool] = []

    def factory(**overrides: Any) -> ContainerPool:
        pool = ContainerPool(sandbox_settings(**overrides), docker_client, PYTHON)
        pools.append(pool)
        pool.start()
        return pool

    yield factory
    for pool in pools:
        pool.shutdown()


@pytest.fixture(scope="module", params=["reuse", "single_use"])
def shared_pool(
    request: pytest.FixtureRequest, docker_client: docker.DockerClient
) -> Iterator[ContainerPool]:
    """One single-container pool per mode for a module: in reuse mode every run of a test lands
    in the same container, which is what the isolation tests need to prove."""
    pool = ContainerPool(sandbox_settings(pool_mode=request.param), docker_client, PYTHON)
    pool.start()
    yield pool
    pool.shutdown()


def run(pool: ContainerPool, code: str, **kwargs: Any) -> RunResult:
    kwargs.setdefault("timeout_s", 5.0)
    return pool.run(RunRequest(code=code, **kwargs))


def probe(pool: ContainerPool) -> dict[str, Any]:
    result = run(pool, PROBE)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def assert_clean(pool: ContainerPool) -> None:
    """The next run sees exactly what a run in a fresh container sees."""
    state = probe(pool)
    env = state.pop("env")
    assert state == CLEAN_STATE
    assert set(env) <= ALLOWED_ENV
    assert env["HOME"] == "/tmp"
