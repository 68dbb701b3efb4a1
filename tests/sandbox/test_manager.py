"""The manager's face to the service: missing images and engines are clear errors that heal."""

from __future__ import annotations

import pytest

from app.core.errors import SandboxError, UnsupportedLanguageError
from app.sandbox import manager as manager_module
from app.sandbox.languages import LANGUAGES
from app.sandbox.manager import SandboxManager
from app.sandbox.types import RunRequest
from tests.sandbox.conftest import sandbox_settings

pytestmark = pytest.mark.docker


class TestStartFailures:
    def test_missing_image_fails_runs_with_the_build_command_then_heals(
        self, docker_client, monkeypatch
    ):
        manager = SandboxManager(
            sandbox_settings(sandbox_python_image="warmbox-no-such-image:none"), docker_client
        )
        manager.start()
        try:
            with pytest.raises(SandboxError, match=r"scripts/build-images\.sh"):
                manager.run(RunRequest(code="print(1)"))
            health = manager.health()
            assert health.status == "unhealthy"
            assert "scripts/build-images.sh" in health.detail
            assert manager.languages()[0]["available"] is False

            manager.settings = sandbox_settings()  # the image now exists
            monkeypatch.setattr(manager_module, "RETRY_START_AFTER_S", 0.0)
            result = manager.run(RunRequest(code="print('healed')"))
            assert result.stdout == "healed\n"
            assert manager.health().status != "unhealthy"  # degraded while it resets
        finally:
            manager.shutdown()

    def test_unreachable_engine_is_unhealthy_not_a_crash(self, monkeypatch, tmp_path):
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
        manager = SandboxManager(sandbox_settings())
        manager.start()
        assert manager.health().status == "unhealthy"
        with pytest.raises(SandboxError, match="Docker engine did not answer"):
            manager.run(RunRequest(code="print(1)"))
        with pytest.raises(SandboxError):
            manager.ping_engine()
        manager.shutdown()

    def test_unknown_language_lists_the_supported_ones(self, docker_client):
        manager = SandboxManager(sandbox_settings(), docker_client)
        manager.start()
        try:
            with pytest.raises(UnsupportedLanguageError) as refused:
                manager.run(RunRequest(code="puts 1", language="ruby"))
            assert refused.value.details == {"supported": sorted(LANGUAGES)}
        finally:
            manager.shutdown()


class TestReadiness:
    def test_ready_is_unhealthy_with_503_when_the_engine_is_unreachable(
        self, make_settings, make_client, monkeypatch, tmp_path
    ):
        monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
        with make_client(make_settings(sandbox_enabled=True)) as client:
            response = client.get("/health/ready")
        body = response.json()
        assert response.status_code == 503
        assert body["status"] == "unhealthy"
        assert body["checks"]["database"]["status"] == "healthy"
        assert body["checks"]["docker"]["status"] == "unhealthy"
        assert body["checks"]["pool"]["status"] == "unhealthy"

    def test_ready_reports_the_pool_when_all_is_up(self, make_settings, make_client):
        settings = make_settings(sandbox_enabled=True, pool_initial_size=1, pool_max_size=2)
        with make_client(settings) as client:
            body = client.get("/health/ready").json()
        assert body["status"] == "healthy"
        assert body["checks"]["pool"]["data"]["python"]["available"] == 1
        assert body["checks"]["docker"]["latency_ms"] > 0
