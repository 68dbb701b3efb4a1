"""The one agent protocol: both sides frame alike, and a pool refuses an image whose agent speaks
another version, saying how to rebuild it."""

from __future__ import annotations

import io
import uuid

import docker
import pytest

from app.core.errors import SandboxError
from app.sandbox.languages import IMAGE_BUILD_COMMAND, sources_hash
from app.sandbox.pool import ContainerPool
from sandbox_images.agent import protocol
from tests.sandbox.conftest import PYTHON, run, sandbox_settings


class TestFrames:
    def test_frames_split_anywhere_decode_whole(self):
        frames = [{"type": protocol.RUN, "id": "a", "code": "print('é')"}, {"type": protocol.PING}]
        data = b"".join(protocol.encode(frame) for frame in frames)
        decoder = protocol.FrameDecoder()
        decoded = []
        for byte in data:
            decoder.feed(bytes([byte]))
            while (frame := decoder.next_frame()) is not None:
                decoded.append(frame)
        assert decoded == frames

    @pytest.mark.parametrize(
        "data",
        [
            protocol.HEADER.pack(protocol.MAX_FRAME_BYTES + 1),
            protocol.HEADER.pack(3) + b"{x}",
            protocol.HEADER.pack(2) + b"[]",
        ],
        ids=["oversized", "not_json", "not_object"],
    )
    def test_bad_frames_are_protocol_errors(self, data):
        decoder = protocol.FrameDecoder()
        decoder.feed(data)
        with pytest.raises(protocol.ProtocolError):
            decoder.next_frame()


@pytest.mark.docker
class TestVersionAtHello:
    def test_current_image_speaks_this_version(self, shared_pool):
        assert run(shared_pool, "print('hello')").stdout == "hello\n"

    def test_image_speaking_another_version_is_a_start_error_naming_the_build(
        self, docker_client: docker.DockerClient
    ):
        base = PYTHON.image(sandbox_settings())
        tag = f"warmbox-test-protocol:{uuid.uuid4().hex[:8]}"
        dockerfile = (
            f"FROM {base}\nUSER 0\n"
            "RUN sed -i 's/^VERSION = .*/VERSION = 999/' /opt/warmbox/protocol.py\n"
            "USER 10001:10001\n"
        )
        docker_client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="none", rm=True
        )
        pool = ContainerPool(
            sandbox_settings(sandbox_python_image=tag, pool_start_timeout_s=20.0),
            docker_client,
            PYTHON,
        )
        try:
            with pytest.raises(SandboxError) as refused:
                pool.start()
        finally:
            pool.shutdown()
            docker_client.images.remove(tag, force=True)
        assert "protocol 999" in refused.value.message
        assert IMAGE_BUILD_COMMAND in refused.value.message


@pytest.mark.docker
class TestSourcesAtHello:
    def test_image_built_from_other_sources_is_a_start_error_naming_the_build(
        self, docker_client: docker.DockerClient
    ):
        # Same protocol VERSION, other sources: what an image built before a change looks like.
        base = PYTHON.image(sandbox_settings())
        tag = f"warmbox-test-sources:{uuid.uuid4().hex[:8]}"
        dockerfile = (
            f"FROM {base}\nUSER 0\n"
            "RUN echo 0123456789abcdef > /opt/warmbox/source-hash\n"
            "USER 10001:10001\n"
        )
        docker_client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="none", rm=True
        )
        pool = ContainerPool(
            sandbox_settings(sandbox_python_image=tag, pool_start_timeout_s=20.0),
            docker_client,
            PYTHON,
        )
        try:
            with pytest.raises(SandboxError) as refused:
                pool.start()
        finally:
            pool.shutdown()
            docker_client.images.remove(tag, force=True)
        assert "built from other sources" in refused.value.message
        assert "0123456789ab" in refused.value.message
        assert IMAGE_BUILD_COMMAND in refused.value.message

    def test_current_image_carries_this_checkouts_sources_hash(self, shared_pool):
        baked = run(shared_pool, "print(open('/opt/warmbox/source-hash').read().strip())")
        assert baked.stdout == sources_hash("python") + "\n"
