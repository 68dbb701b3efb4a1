"""The OpenAPI schema tells clients about callback_url, metadata and a job's deliveries."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_the_schema_describes_callbacks_metadata_and_deliveries(client: TestClient) -> None:
    schemas = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    body = schemas["JobBody"]["properties"]
    assert "WEBHOOK_ALLOWED_HOSTS" in body["callback_url"]["description"]
    metadata = next(option for option in body["metadata"]["anyOf"] if option["type"] == "object")
    assert metadata["maxProperties"] == 16
    deliveries = schemas["JobRead"]["properties"]["deliveries"]
    assert deliveries["items"]["$ref"].endswith("/DeliveryView")
    view = schemas["DeliveryView"]["properties"]
    for field in ("attempts", "last_status_code", "next_attempt_at", "delivered_at", "status"):
        assert field in view
    assert "callback_url" not in schemas["RunBody"]["properties"]  # not on synchronous runs
