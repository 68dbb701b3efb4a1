"""Structured logs: one line per request with its fields, slow requests warned, secrets redacted."""

from __future__ import annotations

import json
import logging

from app.core.logging import REDACTED, redact_secrets


class TestRedaction:
    def test_sensitive_keys_are_redacted_at_any_depth(self):
        event = {
            "event": "login",
            "password": "hunter2",
            "user": {"name": "ann", "api_key": "k-123", "nested": [{"Authorization": "Bearer x"}]},
            "headers": [("cookie", "c=1")],
            "access_token": "eyJ...",
            "client_secret": "s",
            "SECRET_KEY": "s2",
            "count": 3,
        }
        out = redact_secrets(None, "info", event)
        assert out["password"] == REDACTED
        assert out["user"]["api_key"] == REDACTED
        assert out["user"]["nested"][0]["Authorization"] == REDACTED
        assert out["access_token"] == REDACTED
        assert out["client_secret"] == REDACTED
        assert out["SECRET_KEY"] == REDACTED
        assert out["user"]["name"] == "ann"
        assert out["count"] == 3
        assert "hunter2" not in json.dumps(out, default=str)

    def test_event_name_itself_is_kept(self):
        assert redact_secrets(None, "info", {"event": "token_refreshed"})["event"] == (
            "token_refreshed"
        )


def _access_lines(caplog) -> list[dict]:
    return [r.msg for r in caplog.records if r.name == "warmbox.access" and isinstance(r.msg, dict)]


class TestRequestLog:
    def test_every_request_logs_one_line_with_its_fields(self, make_settings, make_client, caplog):
        caplog.set_level(logging.INFO, logger="warmbox.access")
        with make_client(make_settings()) as client:
            response = client.get("/health", headers={"X-Request-ID": "trace-123"})
        lines = [line for line in _access_lines(caplog) if line.get("path") == "/health"]
        assert len(lines) == 1
        line = lines[0]
        assert line["event"] == "request"
        assert line["method"] == "GET"
        assert line["status"] == 200
        assert line["request_id"] == "trace-123" == response.headers["x-request-id"]
        assert isinstance(line["duration_ms"], float)

    def test_slow_requests_are_warned(self, make_settings, make_client, caplog):
        caplog.set_level(logging.INFO, logger="warmbox.access")
        with make_client(make_settings(slow_request_ms=0.0001)) as client:
            client.get("/health")
        slow = [
            r for r in caplog.records if r.name == "warmbox.access" and r.levelname == "WARNING"
        ]
        assert slow
        assert slow[0].msg["event"] == "slow_request"

    def test_json_format_in_production_style(self, make_settings, capsys):
        from app.core.logging import configure_logging

        configure_logging(make_settings(log_format="json"))
        logging.getLogger("probe").info("hello", extra={})
        import structlog

        structlog.get_logger("probe").info("structured", password="p4ss", size=2)
        lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
        structured = next(line for line in lines if line["event"] == "structured")
        assert structured["password"] == REDACTED
        assert structured["size"] == 2
        assert structured["level"] == "info"
        configure_logging(make_settings())
