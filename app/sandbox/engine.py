"""The one thin wrapper around the Docker engine: client, error translation, images, orphans.

Every docker-py call of the sandbox goes through `engine_errors()`, so an unreachable engine or a
missing image surfaces as a SandboxError with a message an operator can act on.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import docker
import requests
import structlog
from docker.errors import DockerException, ImageNotFound, NotFound

from app.core.errors import SandboxError
from app.sandbox.languages import IMAGE_BUILD_COMMAND
from app.sandbox.limits import SANDBOX_USER, SandboxLimits

log = structlog.get_logger(__name__)

LABEL_MANAGED = "warmbox.managed"
LABEL_POOL = "warmbox.pool"
LABEL_HOST = "warmbox.host"
LABEL_PID = "warmbox.pid"
LABEL_LANGUAGE = "warmbox.language"
ENGINE_TIMEOUT_S = 30


@contextlib.contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Translate transport and API failures of the engine into SandboxError."""
    try:
        yield
    except SandboxError:
        raise
    except ImageNotFound as exc:
        raise SandboxError(
            f"{action}: sandbox image missing; build it with {IMAGE_BUILD_COMMAND}"
        ) from exc
    except (DockerException, requests.RequestException, OSError) as exc:
        raise SandboxError(
            f"{action}: the Docker engine did not answer ({type(exc).__name__})"
        ) from exc


def client_pool_size(pool_size: int) -> int:
    """How many connections to the engine the client keeps for reuse (opened as needed)."""
    return max(10, pool_size * 4)


def connect(pool_size: int) -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (or the local socket), pinged once."""
    with engine_errors("connecting to Docker"):
        client = docker.from_env(
            timeout=ENGINE_TIMEOUT_S, max_pool_size=client_pool_size(pool_size)
        )
        client.ping()
    return client


def ping_ms(client: docker.DockerClient) -> float:
    started = time.perf_counter()
    with engine_errors("pinging Docker"):
        client.ping()
    return (time.perf_counter() - started) * 1000


def require_image(client: docker.DockerClient, image: str) -> None:
    """Fail with the exact command to run when the sandbox image has not been built."""
    with engine_errors(f"checking the image {image!r}"):
        client.images.get(image)


def owner_labels(pool_id: str, language: str) -> dict[str, str]:
    return {
        LABEL_MANAGED: "true",
        LABEL_POOL: pool_id,
        LABEL_HOST: socket.gethostname(),
        LABEL_PID: str(os.getpid()),
        LABEL_LANGUAGE: language,
    }


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_orphan(labels: dict[str, str], live_pool_ids: set[str]) -> bool:
    """A container made on this host by a process that is gone, or by a pool of ours now closed.

    Containers of other live processes (another worker, another host sharing the engine) are
    left alone.
    """
    if labels.get(LABEL_HOST) != socket.gethostname():
        return False
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return True
    if pid == os.getpid():
        return labels.get(LABEL_POOL) not in live_pool_ids
    return not _process_alive(pid)


def remove_orphans(client: docker.DockerClient, live_pool_ids: set[str]) -> int:
    """Remove the containers a crashed process left behind; returns how many went."""
    removed = 0
    # The plain list call: its rows carry the labels. The high-level list inspects every container
    # afterwards and fails with NotFound when another process removes one in between.
    with engine_errors("listing orphaned sandboxes"):
        rows = client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"})
    for row in rows:
        if is_orphan(row.get("Labels") or {}, live_pool_ids):
            remove_container(client, row["Id"])
            removed += 1
    if removed:
        log.info("sandbox_orphans_removed", count=removed)
    return removed


def create_hardened_container(
    client: docker.DockerClient,
    image: str,
    limits: SandboxLimits,
    *,
    labels: dict[str, str] | None = None,
    name: str | None = None,
    entrypoint: list[str] | None = None,
) -> str:
    """Create (not start) a container with the full hardening; the one place that does so."""
    with engine_errors("creating a sandbox"):
        created = client.api.create_container(
            image,
            name=name,
            entrypoint=entrypoint,
            user=SANDBOX_USER,
            environment=limits.environment(),
            stdin_open=True,
            tty=False,
            # network_mode "none" (in the host config) leaves only loopback. NetworkDisabled is
            # not set: with it Docker writes no /etc/hosts, and the empty file of the container's
            # init layer hides the image's, so `localhost` would not resolve.
            labels=labels or {},
            host_config=client.api.create_host_config(**limits.host_config()),
        )
    return str(created["Id"])


def remove_container(client: docker.DockerClient, container_id: str) -> None:
    """Kill and remove; a container that is already gone is not an error."""
    # suppress inside engine_errors: outside, NotFound would already be a SandboxError.
    with engine_errors("removing a sandbox"), contextlib.suppress(NotFound):
        client.api.remove_container(container_id, force=True, v=True)


def container_state(client: docker.DockerClient, container_id: str) -> dict[str, Any]:
    with engine_errors("inspecting a sandbox"):
        return client.api.inspect_container(container_id)["State"]
