"""The production image builds from the Dockerfile and serves, as its non-root user.

The container is started the way the README tells an operator to on an engine without a bridge:
host networking on a loopback port, the engine's socket mounted with its group added, the
database migrated by the image's own prestart step. It must report ready and run
`print('hello')` in a real sandbox for a signed-in user.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.sandbox.languages import LANGUAGES
from tests.deploy.image import production_image, run

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DOCKER_SOCKET = "/var/run/docker.sock"
IMAGE_UID = 10000
ADMIN = {"username": "image-admin", "password": secrets.token_urlsafe(16)}


@dataclass
class ApiContainer:
    name: str
    base_url: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _docker_run_argv(image: str, name: str, port: int) -> list[str]:
    sandbox_image = LANGUAGES["python"].image(Settings(_env_file=None))  # type: ignore[call-arg]
    environment = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "SECRET_KEY": secrets.token_urlsafe(48),
        "METRICS_TOKEN": secrets.token_urlsafe(24),
        "SANDBOX_PYTHON_IMAGE": sandbox_image,
        "POOL_INITIAL_SIZE": "1",
        "POOL_MIN_SIZE": "1",
        "POOL_MAX_SIZE": "2",
        # Made at start-up, before the first request: it needs the migrated users table.
        "ADMIN_USERNAME": ADMIN["username"],
        "ADMIN_PASSWORD": ADMIN["password"],
    }
    return [
        *("docker", "run", "--detach", "--name", name),
        # No bridge on this engine: serve on the host's loopback. With the host's network the
        # container also has the host's name, so it needs the host's PID namespace too: the
        # pool's orphan sweep tells live owners by host name and pid, and must see them.
        *("--network", "host", "--pid", "host"),
        *("--volume", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}"),
        *("--group-add", str(os.stat(DOCKER_SOCKET).st_gid)),
        *(arg for key, value in environment.items() for arg in ("--env", f"{key}={value}")),
        image,
    ]


@pytest.fixture(scope="module")
def api_container() -> Iterator[ApiContainer]:
    image = production_image()
    name = f"warmbox-api-test-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    run(_docker_run_argv(image, name, port))
    try:
        yield ApiContainer(name=name, base_url=f"http://127.0.0.1:{port}")
    finally:
        _stop_and_remove(name)


def _stop_and_remove(name: str) -> None:
    """Stop gracefully (the lifespan removes its sandboxes), then remove what is left."""
    pid = _inspect(name)["State"]["Pid"]
    subprocess.run(["docker", "stop", "--time", "30", name], capture_output=True, check=False)
    subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
    leftovers = run(
        ["docker", "ps", "--all", "--quiet", "--filter", f"label=warmbox.pid={pid}"]
    ).split()
    if leftovers and pid:
        subprocess.run(["docker", "rm", "--force", *leftovers], capture_output=True, check=False)


def _inspect(name: str) -> dict[str, Any]:
    return json.loads(run(["docker", "inspect", name]))[0]


def _logs(name: str) -> str:
    result = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
    return (result.stdout + result.stderr)[-4000:]


def _wait_ready(container: ApiContainer, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        state = _inspect(container.name)["State"]
        assert state["Running"], f"the API container stopped:\n{_logs(container.name)}"
        try:
            response = httpx.get(f"{container.base_url}/health/ready", timeout=5)
            if response.status_code == 200 and response.json()["status"] == "healthy":
                return response.json()
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"not ready in time:\n{_logs(container.name)}"
        time.sleep(0.5)


def test_the_image_runs_as_its_non_root_user(api_container: ApiContainer) -> None:
    _wait_ready(api_container)
    assert _inspect(api_container.name)["Config"]["User"] == "warmbox"
    processes = run(["docker", "top", api_container.name, "-o", "uid,pid,args"]).splitlines()[1:]
    assert processes
    assert {line.split()[0] for line in processes} == {str(IMAGE_UID)}, processes


def test_the_image_is_ready_and_runs_hello_for_a_signed_in_user(
    api_container: ApiContainer,
) -> None:
    report = _wait_ready(api_container)
    assert {name: check["status"] for name, check in report["checks"].items()} == {
        "database": "healthy",
        "docker": "healthy",
        "pool": "healthy",
    }
    with httpx.Client(base_url=api_container.base_url, timeout=30) as client:
        login = client.post("/api/v1/auth/login", json=ADMIN)
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        result = client.post(
            "/api/v1/code/execute",
            json={"code": "print('hello')"},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert result.status_code == 200, result.text
    assert (result.json()["success"], result.json()["output"]) == (True, "hello\n")
