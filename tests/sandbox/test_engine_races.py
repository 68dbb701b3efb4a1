"""Containers other processes remove while we look at them are not errors (real engine)."""

from __future__ import annotations

import docker
import pytest

from app.sandbox import engine

pytestmark = pytest.mark.docker


def test_removing_a_container_that_is_already_gone_is_not_an_error(
    docker_client: docker.DockerClient,
) -> None:
    engine.remove_container(docker_client, "0" * 64)
