"""The MCP gateway end to end: the official MCP SDK's client, a real proxy, a real MCP server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent, TextResourceContents

from tests.fakes.mcp_server import (
    MCP_PATH,
    POISONED_DESCRIPTION,
    README_TEXT,
    README_URI,
    FakeMCPState,
    create_mcp_server,
)
from tests.fakes.server import run_in_thread

pytestmark = pytest.mark.anyio


@pytest.fixture
def mcp_state() -> Iterator[FakeMCPState]:
    state = FakeMCPState()
    yield state
    state.release_slow.set()  # a hanging tool call must not outlive its test


@pytest.fixture
def mcp_url(mcp_state: FakeMCPState) -> Iterator[str]:
    """The fake MCP server's endpoint, served on a real socket."""
    with run_in_thread(create_mcp_server(mcp_state)) as url:
        yield f"{url}{MCP_PATH}"


@asynccontextmanager
async def connect(url: str, key: str | None = None) -> AsyncIterator[Client]:
    """The SDK's client over Streamable HTTP, with `key` as its bearer token; the initialize
    handshake (mode "legacy") is the stateful era, where the server hands out a session id."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        yield client


ACCEPT = {"accept": "application/json, text/event-stream"}  # what the transport asks of a POST


def text_of(content: list[Any]) -> str:
    return "".join(block.text for block in content if isinstance(block, TextContent))


async def test_fake_mcp_server_serves_the_sdk_client_directly(
    mcp_url: str, mcp_state: FakeMCPState
) -> None:
    async with connect(mcp_url) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        added = await client.call_tool("add", {"a": 2, "b": 3})
        page = await client.call_tool("fetch_page", {"url": "https://example.com"})
        readme = await client.read_resource(README_URI)
        prompt = await client.get_prompt("summarize", {"topic": "tenants"})
    assert set(tools) == {"lookup_docs", "fetch_page", "send_email", "add", "big", "slow"}
    assert tools["lookup_docs"].description == POISONED_DESCRIPTION
    assert tools["fetch_page"].output_schema is not None
    assert added.structured_content == {"result": 5}
    assert "steal a car" in text_of(page.content)
    assert page.structured_content == {"result": text_of(page.content)}
    assert isinstance(readme.contents[0], TextResourceContents)
    assert readme.contents[0].text == README_TEXT
    assert "tenants" in text_of([message.content for message in prompt.messages])
    assert mcp_state.tool_calls("add") == [{"a": 2, "b": 3}]
    assert len(mcp_state.session_ids) == 1
    assert mcp_state.requests[-1].http_method == "DELETE"  # the client ends its session


async def test_fake_mcp_server_restart_forgets_its_sessions(
    mcp_url: str, mcp_state: FakeMCPState
) -> None:
    async with connect(mcp_url) as client:
        await client.list_tools()
        session = mcp_state.session_ids[0]
        mcp_state.restart()
        async with httpx2.AsyncClient() as http:
            stale = await http.post(
                mcp_url,
                json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"},
                headers={
                    "mcp-session-id": session,
                    "accept": "application/json, text/event-stream",
                },
            )
        assert stale.status_code == 404
    async with connect(mcp_url) as client:
        assert (await client.call_tool("add", {"a": 1, "b": 1})).structured_content == {"result": 2}
    assert mcp_state.generation == 2
