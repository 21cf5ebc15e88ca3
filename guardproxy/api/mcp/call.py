"""One HTTP exchange with the MCP gateway (`McpCall`: the tenant's wiring, the server, the
record), the client's headers the server sees, and how a failure is answered."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

from starlette.responses import JSONResponse, Response

from guardproxy.api.mcp import jsonrpc
from guardproxy.api.mcp.jsonrpc import INVALID_REQUEST, SERVER_FAILED, McpProblem
from guardproxy.api.mcp.sessions import SessionSeal
from guardproxy.errors import (
    GuardproxyError,
    UpstreamError,
)
from guardproxy.media.fetch import ImageFetcher
from guardproxy.pipeline.checks import CheckResult
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.flow import Route
from guardproxy.pipeline.replies import public_message, status_of
from guardproxy.policy.profile import Profile
from guardproxy.upstreams.mcp import SESSION_HEADER, McpReply, McpUpstream

# What of the client's request the server sees besides the body: its session, protocol
# version and stream resumption point. Its Authorization (the tenant key) never.
PASSED_HEADERS = ("mcp-session-id", "mcp-protocol-version", "last-event-id")
ACCEPT = "application/json, text/event-stream"
SESSION_ID = re.compile(r"[\x21-\x7e]{1,1024}")  # the protocol's visible ASCII


@dataclass
class McpCall:
    """One HTTP exchange with the gateway: the tenant's wiring, the server, the record."""

    route: Route
    profile: Profile
    server: McpUpstream
    exchange: Exchange
    fetcher: ImageFetcher
    headers: dict[str, str]  # for the server: the client's session headers, unsealed
    seal: SessionSeal  # the server's session ids, as this client's key holds them
    done: Callable[[], Awaitable[None]]  # writes the audit record, once
    judged_in: list[CheckResult] = field(default_factory=list)
    judged_out: list[CheckResult] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)  # by the client
    on_end: Callable[[], None] | None = None  # run once when its answer has ended

    def ended(self) -> None:
        if self.on_end is not None:
            on_end, self.on_end = self.on_end, None
            on_end()

    @property
    def session(self) -> str:
        return self.headers.get(SESSION_HEADER, "")

    def server_headers(self) -> dict[str, str]:
        """What the server is sent besides the config's headers: the body's type, what the
        gateway accepts back, and the client's session headers."""
        return {"content-type": "application/json", "accept": ACCEPT, **self.headers}

    def request_key(self, request_id: Any) -> tuple[str, ...]:
        """A request of this tenant's session with this server, by its id."""
        return (self.route.tenant.tenant, self.server.name, self.session, str(request_id))

    async def send(
        self, method: str, headers: dict[str, str], body: bytes | None = None, stream: bool = False
    ) -> McpReply:
        """The server asked, the wait counted as upstream time (not the proxy's overhead)."""
        started = time.perf_counter()
        try:
            return await self.server.send(method, headers, body, stream)
        finally:
            self._waited(started)

    async def read(self, reply: McpReply) -> bytes:
        started = time.perf_counter()
        try:
            return await reply.body()
        finally:
            self._waited(started)

    def _waited(self, started: float) -> None:
        waited = (time.perf_counter() - started) * 1000
        self.exchange.upstream_ms = (self.exchange.upstream_ms or 0.0) + waited

    def note(self, **details: Any) -> None:
        record = self.exchange.mcp if self.exchange.mcp is not None else {}
        self.exchange.mcp = record | details

    def conclude(self, status: int) -> None:
        """The record's verdicts: each direction's checks as one."""
        exchange = self.exchange
        if self.judged_out:
            exchange.input = reduce(CheckResult.merge, self.judged_out)
        if self.judged_in:
            exchange.output = reduce(CheckResult.merge, self.judged_in)
        exchange.conclude(status)


def passed_headers(headers: Any, seal: SessionSeal) -> dict[str, str]:
    """The client's headers the server sees, its session id opened (or refused, 404)."""
    passed = {name: headers[name] for name in PASSED_HEADERS if name in headers}
    if SESSION_HEADER in passed:
        passed[SESSION_HEADER] = seal.open(passed[SESSION_HEADER])
    return passed


def problem_for(exc: GuardproxyError, id: Any = None) -> McpProblem:
    """The HTTP status and JSON-RPC error a failure is answered with, carrying the request's
    id where there is one."""
    if isinstance(exc, McpProblem):
        return exc if id is None else McpProblem(exc.status, exc.code, exc.message, id)
    status, _, _ = status_of(exc)  # the proxy's one exception-to-status table
    status = 503 if status == 500 else status  # never a 500 for an error of its own
    code = INVALID_REQUEST if status < 500 else SERVER_FAILED
    return McpProblem(status, code, public_message(exc), id)


def problem_response(problem: McpProblem, exchange: Exchange) -> Response:
    body = jsonrpc.error(problem.id, problem.code, problem.message)
    return JSONResponse(body, problem.status, headers=own_headers(exchange))


def own_headers(exchange: Exchange) -> dict[str, str]:
    return {
        "x-guardproxy-request-id": exchange.request_id,
        "x-guardproxy-overhead-ms": f"{exchange.overhead_ms():.3f}",
    }


def withheld(call: McpCall, exc: GuardproxyError) -> tuple[int, str]:
    """The status and message of an answer that ends in `exc`: the server failed (502), or
    its message could not be judged and is withheld (200, a JSON-RPC error)."""
    if isinstance(exc, UpstreamError):
        status, message = 502, exc.message
    else:
        status, message = 200, f"The MCP server's message was withheld: {exc}"
    call.exchange.error = message
    return status, message


def session_headers(call: McpCall, reply: McpReply) -> dict[str, str]:
    session = reply.session_id
    if not session:
        return {}
    if not SESSION_ID.fullmatch(session):  # the protocol's visible ASCII, 0x21 to 0x7E
        raise UpstreamError("The MCP server sent a session id the protocol does not allow.")
    return {SESSION_HEADER: call.seal.seal(session)}
