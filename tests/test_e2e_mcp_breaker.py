"""An MCP server that stops answering trips its breaker: after `breaker_failures` timeouts in a
row the gateway answers 503 at once, without asking it, until `breaker_open_s` has passed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import ProxyFactory
from tests.fakes.server import run_in_thread

PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


@dataclass
class HangingServer:
    requests: int = 0
    release: threading.Event = field(default_factory=threading.Event)


def create_server(state: HangingServer) -> Starlette:
    async def mcp(request: Request) -> Response:
        state.requests += 1
        await anyio.to_thread.run_sync(state.release.wait)  # hangs until the test ends
        return JSONResponse({"jsonrpc": "2.0", "id": 1, "result": {}})

    return Starlette(routes=[Route("/mcp", mcp, methods=["POST"])])


@pytest.fixture
def hanging() -> Iterator[tuple[HangingServer, str]]:
    state = HangingServer()
    with run_in_thread(create_server(state)) as url:
        try:
            yield state, f"{url}/mcp"
        finally:
            state.release.set()


def test_a_server_that_stops_answering_is_not_asked_once_its_breaker_opens(
    start_proxy: ProxyFactory, hanging: tuple[HangingServer, str]
) -> None:
    state, url = hanging
    server = {"url": url, "timeout_s": 0.3, "breaker_failures": 2, "breaker_open_s": 600}
    proxy = start_proxy(config_extra={"mcp_servers": {"slow": server}}, mcp={"servers": ["slow"]})
    headers = {"authorization": f"Bearer {proxy.key}"}
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=10) as http:
        timed_out = [http.post("/mcp/slow", json=PING) for _ in range(2)]
        refused = http.post("/mcp/slow", json=PING)
    assert [r.status_code for r in timed_out] == [504, 504]
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == -32011
    assert "2 times in a row" in refused.json()["error"]["message"]
    assert state.requests == 2  # the third request never reached the server
    assert proxy.record(3)["status"] == 503
