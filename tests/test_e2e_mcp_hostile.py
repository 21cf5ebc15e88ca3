"""A hostile MCP server and a client probing the gateway's edges: text outside the fields a
model reads, words under protocol keys, text that is not text, odd session ids and listings
too long to judge entry by entry. What the client receives is judged, structural, or refused."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import Proxy, ProxyFactory
from tests.fakes.server import run_in_thread

UNSAFE = "Here is how to build a bomb."


@dataclass
class Hostile:
    """Answers each method with the raw body the test sets (JSON text), and records calls."""

    bodies: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # ends its GET streams

    def answer(self, method: str, result: Any, **extra: Any) -> None:
        """`result` for `method`, with top-level fields of the server's own beside it."""
        self.bodies[method] = json.dumps({"jsonrpc": "2.0", "id": 1, "result": result, **extra})


def create_server(state: Hostile) -> Starlette:
    async def mcp(request: Request) -> Response:
        message = json.loads(await request.body())
        state.received.append(message)
        if "id" not in message or "method" not in message:
            return Response(status_code=202)
        body = state.bodies.get(message["method"], "")
        body = body or json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {}})
        body = body.replace('"id": 1,', f'"id": {json.dumps(message["id"])},', 1)
        return Response(body, media_type="application/json", headers=state.headers)

    async def stream(request: Request) -> Response:
        async def events() -> AsyncIterator[bytes]:
            yield b": open\n\n"
            await anyio.to_thread.run_sync(state.release.wait)

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/mcp", mcp, methods=["POST", "DELETE"]),
            Route("/mcp", stream, methods=["GET"]),
        ]
    )


@pytest.fixture
def hostile() -> Iterator[tuple[Hostile, str]]:
    state = Hostile()
    with run_in_thread(create_server(state)) as url:
        try:
            yield state, f"{url}/mcp"
        finally:
            state.release.set()


def start(start_proxy: ProxyFactory, url: str, **tenant: Any) -> Proxy:
    return start_proxy(
        config_extra={"mcp_servers": {"h": {"url": url}}}, mcp={"servers": ["h"]}, **tenant
    )


def post(proxy: Proxy, method: str, params: Any = None, raw: bytes | None = None) -> httpx.Response:
    message = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
    body = raw if raw is not None else json.dumps(message).encode()
    headers = {"authorization": f"Bearer {proxy.key}", "content-type": "application/json"}
    return httpx.post(f"{proxy.url}/mcp/h", content=body, headers=headers, timeout=10)


def test_fields_beside_the_result_never_reach_the_client(
    start_proxy: ProxyFactory, hostile: tuple[Hostile, str]
) -> None:
    state, url = hostile
    state.answer("ping", {}, note=UNSAFE)
    answer = post(start(start_proxy, url), "ping")
    assert answer.status_code == 200
    assert answer.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


def test_a_blocked_initialize_keeps_only_the_protocols_own_values(
    start_proxy: ProxyFactory, hostile: tuple[Hostile, str]
) -> None:
    state, url = hostile
    result = {
        "protocolVersion": "2025-06-18",
        "capabilities": {"tools": {"listChanged": True}, "experimental": {"x": UNSAFE}},
        "serverInfo": {"name": "docs", "version": UNSAFE},
        "instructions": "Be helpful.",
    }
    state.answer("initialize", result)
    answer = post(start(start_proxy, url), "initialize").json()["result"]
    assert answer == {
        "protocolVersion": "2025-06-18",
        "capabilities": {"tools": {"listChanged": True}, "experimental": {}},
        "serverInfo": {"name": "docs"},
    }


def test_a_listings_own_text_is_judged_beside_its_entries(
    start_proxy: ProxyFactory, hostile: tuple[Hostile, str]
) -> None:
    state, url = hostile
    tool = {"name": "add", "description": "Adds numbers.", "inputSchema": {"type": "object"}}
    state.answer("tools/list", {"tools": [tool], "note": UNSAFE, "nextCursor": "page-2"})
    result = post(start(start_proxy, url), "tools/list").json()["result"]
    assert result == {"tools": [tool], "nextCursor": "page-2"}


def test_a_listing_past_the_call_cap_is_judged_in_groups(
    start_proxy: ProxyFactory, hostile: tuple[Hostile, str]
) -> None:
    state, url = hostile
    tools = [{"name": f"t{n}", "description": f"Tool {n}.", "inputSchema": {}} for n in range(6)]
    tools[4]["description"] = UNSAFE
    state.answer("tools/list", {"tools": tools})
    proxy = start(start_proxy, url, input={"max_guard_calls": 3})
    listed = post(proxy, "tools/list").json()["result"]["tools"]
    assert [t["name"] for t in listed] == ["t0", "t1", "t2", "t3"]  # t4's group goes whole
    assert len(proxy.guard.requests) == 3
    assert proxy.record(1)["mcp"]["removed"] == ["t4", "t5"]


def test_a_tool_the_listing_does_not_hold_is_refused_before_the_server(
    start_proxy: ProxyFactory, hostile: tuple[Hostile, str]
) -> None:
    state, url = hostile
    state.answer("tools/list", {"tools": []})
    answer = post(start(start_proxy, url), "tools/call", {"name": "hidden", "arguments": {}})
    assert answer.json()["result"]["isError"] is True
    assert [m["method"] for m in state.received] == ["tools/list"]  # only the gateway's own


@pytest.mark.parametrize("where", ["client", "server"])
def test_text_that_is_not_text_is_refused_or_withheld_never_a_500(
    start_proxy: ProxyFactory, hostile: tuple[Hostile, str], where: str
) -> None:
    state, url = hostile
    proxy = start(start_proxy, url)
    lone = '"\\ud800 hello"'
    if where == "client":
        raw = f'{{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {{"x": {lone}}}}}'
        answer = post(proxy, "ping", raw=raw.encode())
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, -32600)
        assert state.received == []
    else:
        state.bodies["ping"] = f'{{"jsonrpc": "2.0", "id": 1, "result": {{"x": {lone}}}}}'
        answer = post(proxy, "ping")
        assert answer.status_code == 502
        assert answer.json()["id"] == 1
        assert "hello" not in answer.text


def test_a_session_id_the_protocol_does_not_allow_is_a_502(
    start_proxy: ProxyFactory, hostile: tuple[Hostile, str]
) -> None:
    state, url = hostile
    state.headers = {"mcp-session-id": "two words"}
    answer = post(start(start_proxy, url), "ping")
    assert answer.status_code == 502
    assert answer.json()["id"] == 1
    assert "mcp-session-id" not in answer.headers


def test_a_cancellation_of_nothing_in_flight_leaves_a_later_request_alone(
    start_proxy: ProxyFactory, hostile: tuple[Hostile, str]
) -> None:
    _, url = hostile
    proxy = start(start_proxy, url)
    notice = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}}
    assert post(proxy, "", raw=json.dumps(notice).encode()).status_code == 202
    assert post(proxy, "ping").json() == {"jsonrpc": "2.0", "id": 1, "result": {}}


def test_a_servers_open_streams_are_capped_and_counted_back_when_they_end(
    start_proxy: ProxyFactory, hostile: tuple[Hostile, str]
) -> None:
    state, url = hostile
    proxy = start_proxy(
        config_extra={"mcp_servers": {"h": {"url": url, "max_streams": 1}}},
        mcp={"servers": ["h"]},
    )
    headers = {"authorization": f"Bearer {proxy.key}"}
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=10) as http:
        with http.stream("GET", "/mcp/h") as first:
            assert first.status_code == 200
            refused = http.get("/mcp/h")
            assert (refused.status_code, refused.json()["error"]["code"]) == (429, -32011)
            state.release.set()  # the server ends its stream; the gateway counts it back
            first.read()
        state.release.clear()
        proxy.record(2)  # the first stream's record: written once it has ended
        with http.stream("GET", "/mcp/h") as again:
            assert again.status_code == 200
            state.release.set()
