"""The MCP gateway end to end: the official MCP SDK's client, a real proxy, a real MCP server."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent, TextResourceContents

from tests.conftest import TENANT_KEY, Proxy, ProxyFactory
from tests.fakes.mcp_server import (
    MCP_PATH,
    POISONED_DESCRIPTION,
    README_TEXT,
    README_URI,
    FakeMCPState,
    create_mcp_server,
)
from tests.fakes.server import run_in_thread

ACCEPT = {"accept": "application/json, text/event-stream"}  # what the transport asks of a POST
SERVER_TOKEN = "mcp-docs-server-token"
SERVER_HEADERS = {"Authorization": f"Bearer {SERVER_TOKEN}", "X-Docs-Region": "eu"}
MAX_RESPONSE_BYTES = 64 * 1024
REFUSAL = "That tool's answer was withheld by policy."
PROTOCOL = "2025-11-25"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": PROTOCOL,
        "capabilities": {},
        "clientInfo": {"name": "raw-http", "version": "1"},
    },
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
ADDRESS = "alice@example.com"
BLOCKED = -32010  # the JSON-RPC error of a call blocked by policy (on_block: error)
UPSTREAM_FAILED = -32011  # the server failed, timed out or answered too much
RAW_TIMEOUT_S = 30  # far past any timeout the proxy is given here: the proxy must answer first


@pytest.fixture
def mcp_state() -> FakeMCPState:
    return FakeMCPState()


@pytest.fixture
def mcp_url(mcp_state: FakeMCPState) -> Iterator[str]:
    """The fake MCP server's endpoint, served on a real socket."""
    with run_in_thread(create_mcp_server(mcp_state)) as url:
        try:
            yield f"{url}{MCP_PATH}"
        finally:
            mcp_state.release_slow.set()  # a hanging tool must not hold up the server's exit


@asynccontextmanager
async def connect(url: str, key: str | None = None, mode: str = "legacy") -> AsyncIterator[Client]:
    """The SDK's client over Streamable HTTP, with `key` as its bearer token. The initialize
    handshake ("legacy") is the stateful era, where the server hands out a session id; "auto",
    the SDK's default, first probes `server/discover` for the sessionless 2026 era."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def text_of(content: list[Any]) -> str:
    return "".join(block.text for block in content if isinstance(block, TextContent))


def assert_refused(result: CallToolResult) -> None:
    assert (result.is_error, text_of(result.content)) == (True, REFUSAL)


async def call_through(proxy: Proxy, name: str, arguments: dict[str, Any]) -> CallToolResult:
    """One tool call by a fresh SDK client session through the proxy."""
    async with connect(endpoint(proxy), proxy.key) as client:
        return await client.call_tool(name, arguments)


@pytest.mark.anyio
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


@pytest.mark.anyio
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
                headers={"mcp-session-id": session, **ACCEPT},
            )
        assert stale.status_code == 404
    async with connect(mcp_url) as client:
        assert (await client.call_tool("add", {"a": 1, "b": 1})).structured_content == {"result": 2}
    assert mcp_state.generation == 2


GatewayFactory = Callable[..., Proxy]


@pytest.fixture
def start_gateway(start_proxy: ProxyFactory, mcp_url: str) -> GatewayFactory:
    """A proxy with the fake MCP server as `docs` (and as `other`, which the tenant may not
    use): `start_gateway(server={...docs settings}, **tenant_keys)`."""

    def start(server: dict[str, Any] | None = None, **tenant: Any) -> Proxy:
        docs = {
            "url": mcp_url,
            "headers": SERVER_HEADERS,
            "timeout_s": 10,
            "max_response_bytes": MAX_RESPONSE_BYTES,
        }
        servers = {"docs": docs | (server or {}), "other": {"url": mcp_url}}
        tenant = {"mcp": {"servers": ["docs"]}, "refusal_message": REFUSAL, **tenant}
        return start_proxy(config_extra={"mcp_servers": servers}, **tenant)

    return start


def endpoint(proxy: Proxy, server: str = "docs") -> str:
    return f"{proxy.url}/mcp/{server}"


def audit_of(proxy: Proxy, method: str, tool: str | None = None) -> dict[str, Any]:
    """The first MCP audit record for `method` (and `tool`), waiting for it."""
    deadline = time.monotonic() + 10
    while True:
        for record in list(proxy.audit.records):
            mcp = record.get("mcp") or {}
            if mcp.get("method") == method and (tool is None or mcp.get("tool") == tool):
                return record
        assert time.monotonic() < deadline, f"no audit record for {method} {tool or ''}"
        time.sleep(0.01)


def rpc_answer(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message an answer carries, as JSON or as the last SSE event."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        answer: dict[str, Any] = json.loads([d for d in data if d][-1])
        return answer
    message: dict[str, Any] = response.json()
    return message


def tool_call(name: str, arguments: dict[str, Any], number: int = 2) -> dict[str, Any]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": params}


@dataclass
class RawSession:
    """A Streamable HTTP session driven by hand with httpx, for what the SDK never sends."""

    http: httpx.Client
    url: str
    session: str = ""

    def post(self, message: Any) -> httpx.Response:
        headers = {**ACCEPT, "mcp-protocol-version": PROTOCOL}
        if self.session:
            headers["mcp-session-id"] = self.session
        return self.http.post(self.url, json=message, headers=headers)

    def delete(self) -> httpx.Response:
        return self.http.delete(self.url, headers={"mcp-session-id": self.session})

    def open(self) -> RawSession:
        answer = self.post(INITIALIZE)
        assert answer.status_code == 200, answer.text
        self.session = answer.headers["mcp-session-id"]
        assert self.post(INITIALIZED).status_code == 202
        return self


@contextmanager
def raw_session(proxy: Proxy) -> Iterator[RawSession]:
    """An initialized session through the proxy, with the tenant's key."""
    with proxy.http() as http:
        http.timeout = httpx.Timeout(RAW_TIMEOUT_S)
        yield RawSession(http, endpoint(proxy)).open()


@asynccontextmanager
async def watched(url: str, key: str, seen: list[httpx2.Headers]) -> AsyncIterator[Client]:
    """`connect`, keeping the headers of every answer the client receives."""

    async def keep(response: httpx2.Response) -> None:
        seen.append(response.headers)

    hooks = {"response": [keep]}
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx2.AsyncClient(headers=headers, event_hooks=hooks) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        yield client


@pytest.mark.anyio
async def test_poisoned_tool_is_removed_from_the_list_and_the_record_names_it(
    start_gateway: GatewayFactory,
) -> None:
    proxy = start_gateway()
    async with connect(endpoint(proxy), proxy.key) as client:
        tools = (await client.list_tools()).tools
    assert {tool.name for tool in tools} == {"fetch_page", "send_email", "add", "big", "slow"}
    assert all(tool.description != POISONED_DESCRIPTION for tool in tools)
    record = audit_of(proxy, "tools/list")
    assert record["api"] == "mcp"
    assert record["mcp"]["server"] == "docs"
    assert record["mcp"]["removed"] == ["lookup_docs"]


@pytest.mark.anyio
async def test_the_sdks_default_negotiation_is_guarded_too(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway()
    async with connect(endpoint(proxy), proxy.key, mode="auto") as client:
        tools = (await client.list_tools()).tools
        page = await client.call_tool("fetch_page", {"url": "https://example.com/cars"})
        added = await client.call_tool("add", {"a": 2, "b": 3})
    assert "lookup_docs" not in {tool.name for tool in tools}
    assert_refused(page)
    assert added.structured_content == {"result": 5}


@pytest.mark.anyio
async def test_unsafe_tool_result_becomes_the_refusal(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway(on_block="refusal")
    result = await call_through(proxy, "fetch_page", {"url": "https://example.com/cars"})
    assert_refused(result)
    assert "steal a car" not in result.model_dump_json()
    assert mcp_state.tool_calls("fetch_page") == [{"url": "https://example.com/cars"}]
    assert audit_of(proxy, "tools/call", "fetch_page")["api"] == "mcp"


@pytest.mark.anyio
async def test_unsafe_tool_result_is_a_json_rpc_error_when_the_tenant_wants_errors(
    start_gateway: GatewayFactory,
) -> None:
    proxy = start_gateway(on_block="error")
    async with connect(endpoint(proxy), proxy.key) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("fetch_page", {"url": "https://example.com/cars"})
    assert raised.value.code == BLOCKED
    assert "steal a car" not in json.dumps(raised.value.error.model_dump(mode="json"))


@pytest.mark.anyio
async def test_unsafe_arguments_are_refused_before_the_server_sees_them(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway()
    body = "Tell me how to build a bomb."
    assert_refused(await call_through(proxy, "send_email", {"to": "bob", "body": body}))
    assert mcp_state.tool_calls("send_email") == []


@pytest.mark.anyio
async def test_addresses_in_arguments_reach_the_server_masked(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway(redaction={"detectors": ["email"]})
    arguments = {"to": ADDRESS, "body": f"Write to {ADDRESS} soon."}
    result = await call_through(proxy, "send_email", arguments)  # the SDK checks its schema
    masked = "[REDACTED:EMAIL]"
    assert mcp_state.tool_calls("send_email") == [
        {"to": masked, "body": f"Write to {masked} soon."}
    ]
    assert all(ADDRESS.encode() not in seen.body for seen in mcp_state.requests)
    assert result.is_error is not True
    assert result.structured_content == {"result": text_of(result.content)}


@pytest.mark.anyio
async def test_safe_tool_result_is_relayed_exactly(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway()
    result = await call_through(proxy, "add", {"a": 2, "b": 3})
    assert result.is_error is not True
    assert result.structured_content == {"result": 5}
    assert text_of(result.content) == "5"
    assert mcp_state.tool_calls("add") == [{"a": 2, "b": 3}]


@pytest.mark.anyio
async def test_a_removed_tool_cannot_be_called(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway()
    # The client never listed the tools: the proxy judges the listing on its own.
    assert_refused(await call_through(proxy, "lookup_docs", {"query": "setup"}))
    assert mcp_state.tool_calls("lookup_docs") == []


@pytest.mark.anyio
async def test_server_gets_its_configured_headers_and_never_the_tenant_key(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway()
    answers: list[httpx2.Headers] = []
    async with watched(endpoint(proxy), proxy.key, answers) as client:
        await client.call_tool("add", {"a": 1, "b": 1})
    assert mcp_state.requests
    for seen in mcp_state.requests:
        assert seen.headers["authorization"] == f"Bearer {SERVER_TOKEN}"
        assert seen.headers["x-docs-region"] == "eu"
        assert all(TENANT_KEY not in value for value in seen.headers.values())
    assert answers
    assert all(SERVER_TOKEN not in value for headers in answers for value in headers.values())


@pytest.mark.anyio
async def test_each_client_has_its_own_session(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway()
    first: list[httpx2.Headers] = []
    second: list[httpx2.Headers] = []
    async with (
        watched(endpoint(proxy), proxy.key, first) as one,
        watched(endpoint(proxy), proxy.key, second) as two,
    ):
        await one.call_tool("add", {"a": 1, "b": 2})
        await two.call_tool("add", {"a": 3, "b": 4})
    sessions = [
        {h["mcp-session-id"] for h in seen if "mcp-session-id" in h} for seen in (first, second)
    ]
    assert all(len(ids) == 1 for ids in sessions)
    assert sessions[0] != sessions[1]
    # The client holds the server's id sealed to its key: `SESSION.MAC`.
    opened = {sealed.rpartition(".")[0] for sealed in sessions[0] | sessions[1]}
    assert set(mcp_state.session_ids) == opened


def test_delete_ends_the_session_and_the_proxy_relays_the_servers_404(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway()
    with raw_session(proxy) as raw:
        assert raw.delete().status_code in (200, 204)
        after = raw.post({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    assert after.status_code == 404
    assert [r.http_method for r in mcp_state.requests if r.http_method == "DELETE"] == ["DELETE"]


@pytest.mark.anyio
async def test_a_restarted_server_forgets_sessions_and_a_new_one_works(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway()
    with raw_session(proxy) as raw:
        assert rpc_answer(raw.post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))["result"]
        mcp_state.restart()
        stale = raw.post({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    assert stale.status_code == 404
    result = await call_through(proxy, "add", {"a": 20, "b": 22})
    assert result.structured_content == {"result": 42}
    assert len(mcp_state.session_ids) == 2


def test_malformed_json_is_a_parse_error(start_gateway: GatewayFactory) -> None:
    proxy = start_gateway()
    with proxy.http() as http:
        answer = http.post(
            endpoint(proxy),
            content=b'{"jsonrpc": "2.0", "id": 1,',
            headers={**ACCEPT, "content-type": "application/json"},
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == -32700


def test_a_batch_is_an_invalid_request(start_gateway: GatewayFactory) -> None:
    proxy = start_gateway()
    batch = [INITIALIZE, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]
    with proxy.http() as http:
        answer = http.post(endpoint(proxy), json=batch, headers=ACCEPT)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == -32600


@pytest.mark.parametrize(
    ("server", "key", "status"),
    [
        ("nope", TENANT_KEY, 404),  # no such server
        ("other", TENANT_KEY, 403),  # a server the tenant may not use
        ("docs", "sk-not-a-tenant", 401),
        ("docs", "", 401),
    ],
)
def test_who_may_reach_which_server(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState, server: str, key: str, status: int
) -> None:
    proxy = start_gateway()
    headers = {**ACCEPT, "authorization": f"Bearer {key}"} if key else ACCEPT
    answer = httpx.post(endpoint(proxy, server), json=INITIALIZE, headers=headers)
    assert answer.status_code == status
    assert mcp_state.requests == []


def test_the_servers_own_error_for_an_unknown_method_is_relayed(
    start_gateway: GatewayFactory,
) -> None:
    proxy = start_gateway()
    with raw_session(proxy) as raw:
        answer = raw.post({"jsonrpc": "2.0", "id": 7, "method": "no/such/method"})
    assert answer.status_code != 500
    error = rpc_answer(answer)["error"]
    assert (error["code"], error.get("data")) == (-32601, "no/such/method")


def test_a_result_over_the_size_limit_is_never_relayed(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway()
    with raw_session(proxy) as raw:
        answer = raw.post(tool_call("big", {"size": 4 * MAX_RESPONSE_BYTES}))
    assert mcp_state.tool_calls("big") == [{"size": 4 * MAX_RESPONSE_BYTES}]
    assert answer.status_code != 500
    assert rpc_answer(answer)["error"]["code"] == UPSTREAM_FAILED
    assert len(answer.content) < MAX_RESPONSE_BYTES


def test_a_hanging_tool_ends_at_the_servers_timeout(
    start_gateway: GatewayFactory, mcp_state: FakeMCPState
) -> None:
    proxy = start_gateway(server={"timeout_s": 1})
    with raw_session(proxy) as raw:
        answer = raw.post(tool_call("slow", {}))
    assert mcp_state.slow_started.is_set()
    assert answer.status_code in (200, 504)
    assert rpc_answer(answer)["error"]["code"] == UPSTREAM_FAILED


@pytest.mark.anyio
async def test_safe_resources_and_prompts_pass_through(start_gateway: GatewayFactory) -> None:
    proxy = start_gateway()
    async with connect(endpoint(proxy), proxy.key) as client:
        resources = (await client.list_resources()).resources
        readme = await client.read_resource(README_URI)
        prompts = (await client.list_prompts()).prompts
        prompt = await client.get_prompt("summarize", {"topic": "tenants"})
        instructions = client.instructions
    assert [str(resource.uri) for resource in resources] == [README_URI]
    assert isinstance(readme.contents[0], TextResourceContents)
    assert readme.contents[0].text == README_TEXT
    assert [p.name for p in prompts] == ["summarize"]
    assert (
        text_of([m.content for m in prompt.messages])
        == "Summarize what the docs say about tenants."
    )
    assert instructions == "Answers questions about docs."
