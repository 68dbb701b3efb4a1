"""The MCP endpoint through the official SDK's own client, against the live app and the real
engine: every tool, the bearer token, permissions and the refusals' codes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any, cast

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from app.auth.models import Role
from tests.api.live import LiveServer, serve
from tests.auth.helpers import access_token_for, create_user
from tests.jobs.helpers import app_settings

pytestmark = pytest.mark.docker

TOOLS = {
    "list_languages",
    "run_code",
    "create_session",
    "execute_in_session",
    "upload_file",
    "read_file",
    "close_session",
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = app_settings(
        tmp_path_factory.mktemp("mcp"),
        pool_max_total=3,
        pool_max_size=3,
        sandbox_python_preload="",
        max_concurrent_runs_per_user=3,
    )
    with serve(settings) as server:
        yield server


def token_for(live: LiveServer, role: Role = Role.USER) -> str:
    user = create_user(cast(Any, live), role)
    return access_token_for(cast(Any, live), user)


def call(live: LiveServer, token: str, steps: Any) -> Any:
    """Open the SDK's client with the bearer token and run `steps(client)` in it."""

    async def main() -> Any:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with (
            http,
            Client(streamable_http_client(f"{live.base_url}/mcp", http_client=http)) as client,
        ):
            return await steps(client)

    return anyio.run(main)


def structured(result: Any) -> Any:
    assert not result.is_error, result.content
    value = result.structured_content
    return value.get("result", value) if isinstance(value, dict) else value


def test_lists_the_tools(live):
    tools = call(live, token_for(live), lambda client: client.list_tools())
    assert {tool.name for tool in tools.tools} == TOOLS


def test_run_code_and_list_languages(live):
    token = token_for(live)

    async def steps(client):
        languages = structured(await client.call_tool("list_languages", {}))
        ran = structured(await client.call_tool("run_code", {"code": "print(6 * 7)"}))
        return languages, ran

    languages, ran = call(live, token, steps)
    assert "python" in {item["name"] for item in languages}
    assert ran["output"] == "42\n"
    assert ran["success"] is True


def test_a_session_through_every_tool(live):
    token = token_for(live)

    async def steps(client):
        created = structured(await client.call_tool("create_session", {}))
        session_id = created["session_id"]
        upload = {"session_id": session_id, "path": "data.txt", "content": "3,4"}
        structured(await client.call_tool("upload_file", upload))
        first = structured(await client.call_tool("execute_in_session", {
            "session_id": session_id,
            "code": "a, b = map(int, open('data.txt').read().split(','))\n"
                    "open('out.txt', 'w').write(str(a * b))",
        }))  # fmt: skip
        second = structured(await client.call_tool("execute_in_session", {
            "session_id": session_id,
            "code": "import matplotlib.pyplot as plt\nplt.plot([a, b]); print(a + b)",
            "timeout": 20,
        }))  # fmt: skip
        read = structured(await client.call_tool("read_file", {
            "session_id": session_id, "path": "out.txt", "encoding": "base64"}))  # fmt: skip
        closed = structured(await client.call_tool("close_session", {"session_id": session_id}))
        after = await client.call_tool(
            "execute_in_session", {"session_id": session_id, "code": "print(a)"}
        )
        return first, second, read, closed, after

    first, second, read, closed, after = call(live, token, steps)
    assert first["success"] is True
    assert second["output"] == "7\n"
    assert base64.b64decode(second["artifacts"][0]["data"]).startswith(b"\x89PNG")
    assert base64.b64decode(read["content"]) == b"12"
    assert closed["closed"] is True
    assert after.is_error
    assert "SESSION_GONE" in after.content[0].text


def test_another_users_session_is_not_found_through_mcp(live):
    owner, other = token_for(live), token_for(live)

    async def create(client):
        return structured(await client.call_tool("create_session", {}))["session_id"]

    session_id = call(live, owner, create)

    async def intrude(client):
        return await client.call_tool(
            "execute_in_session", {"session_id": session_id, "code": "print(1)"}
        )

    result = call(live, other, intrude)
    assert result.is_error
    assert "NOT_FOUND" in result.content[0].text

    async def close(client):
        return structured(await client.call_tool("close_session", {"session_id": session_id}))

    assert call(live, owner, close)["closed"] is True


def test_guests_may_list_languages_but_not_run_code(live):
    token = token_for(live, Role.GUEST)

    async def steps(client):
        return (
            await client.call_tool("list_languages", {}),
            await client.call_tool("run_code", {"code": "print(1)"}),
        )

    languages, ran = call(live, token, steps)
    assert not languages.is_error
    assert ran.is_error
    assert "AUTHORIZATION_ERROR" in ran.content[0].text


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic abc"])
def test_mcp_without_a_valid_token_is_401_in_the_error_format(live, authorization):
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if authorization:
        headers["Authorization"] = authorization
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    response = httpx.post(f"{live.base_url}/mcp", json=body, headers=headers, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AUTHENTICATION_ERROR"
    assert response.headers["WWW-Authenticate"] == "Bearer"
