"""Fixtures for sandbox tests: a real Docker engine, the real image, real pools. No stand-ins."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest

from app.core.config import Settings
from app.sandbox.languages import IMAGE_BUILD_COMMAND, IMAGES_DIR, LANGUAGES
from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest, RunResult
from sandbox_images.agent import protocol

PYTHON = LANGUAGES["python"]

# What a run sees of its container; equal to a fresh container's view when nothing leaked.
PROBE = r"""
import json, os
def ipc(kind):
    with open(f"/proc/sysvipc/{kind}") as table:
        return len([row for row in table.read().splitlines()[1:] if row.strip()])
me = os.getpid()
def who(pid):  # the fork server (sandbox_images/agent/zygote.py) by name, any other by pid
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline, open(f"/proc/{pid}/stat") as stat:
        zygote = cmdline.read().endswith(b"--zygote\0") and stat.read().split()[3] == "1"
    return "fork server" if zygote else pid
others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
print(json.dumps({
    "pids": sorted(str(who(p)) for p in others),
    "tmp": sorted(os.listdir("/tmp")),
    "cwd": os.getcwd(),
    "env": dict(os.environ),
    "ipc": [ipc(kind) for kind in ("shm", "msg", "sem")],
    "mqueue": sorted(os.listdir("/dev/mqueue")),
    "uid": os.getuid(),
}))
"""
CLEAN_STATE = {
    "pids": ["fork server"],  # Python's zygote, which forks every runner and runs no program
    "tmp": ["main.py"],
    "cwd": "/tmp",
    "ipc": [0, 0, 0],
    "mqueue": [],
    "uid": 10001,
}
# The agent's allowlist plus what the Python descriptor adds (MPLBACKEND, MPLCONFIGDIR).
PYTHON_DESCRIPTOR = json.loads((IMAGES_DIR / "python" / "language.json").read_text())
ALLOWED_ENV = set(protocol.RUN_ENV) | set(PYTHON_DESCRIPTOR.get("env", {}))


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
        # The pool's mechanics are tested without the scientific pre-imports, whose second of
        # start-up would change what a cold start costs; test_languages tests them.
        "sandbox_python_preload": "",
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
    image = PYTHON.image(sandbox_settings())
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


@pytest.fixture(scope="module")
def javascript_pool(docker_client: docker.DockerClient) -> Iterator[ContainerPool]:
    """One JavaScript pool (a parked node runner after its first run) for a module."""
    settings = sandbox_settings(pool_start_timeout_s=60.0, pool_acquire_timeout_s=60.0)
    pool = ContainerPool(settings, docker_client, LANGUAGES["javascript"])
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
