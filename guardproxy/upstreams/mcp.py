"""An MCP server over Streamable HTTP, as the gateway reaches it: one POST, GET or DELETE at
the configured URL with the configured headers and the client's session headers, answered
with one JSON-RPC message, an SSE stream of them, or a bare status.

Nothing here reads what a message says; the gateway judges every message before the client
gets it. A message over `max_response_bytes` is an error, never relayed in part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

from guardproxy.config import McpServerSettings
from guardproxy.core.sse import SSEDecoder, SSEEvent
from guardproxy.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from guardproxy.guards.capacity import Breaker

SESSION_HEADER = "mcp-session-id"
EVENT_STREAM = "text/event-stream"


class MessageTooLarge(UpstreamError):
    """An MCP server's message larger than the gateway will judge."""


class ServerUnavailable(UpstreamUnavailable):
    """The server's breaker is open: it failed too often in a row to be asked now."""


@dataclass(frozen=True)
class McpEvent:
    """One SSE event of a server's stream: its `id` (for resumption) and its data."""

    id: str | None
    data: str | None  # None: a comment or keep-alive


class McpReply:
    """A server's answer, open until `aclose`: a JSON body, an event stream, or a status."""

    def __init__(
        self,
        response: httpx.Response,
        max_bytes: int,
        outcome: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        self.response = response
        self.status = response.status_code
        self.session_id = response.headers.get(SESSION_HEADER)
        self.content_type = response.headers.get("content-type", "").split(";")[0].strip()
        self._max = max_bytes
        self._outcome: Callable[[bool], None] | None = outcome  # told once, then None

    def settle(self, ok: bool) -> None:
        """Tell the server's breaker how the answer went, once."""
        if self._outcome is not None:
            outcome, self._outcome = self._outcome, None
            outcome(ok)

    @property
    def streams(self) -> bool:
        return bool(self.content_type == EVENT_STREAM)

    async def body(self) -> bytes:
        """The whole body, or MessageTooLarge past the limit."""
        chunks, size = [], 0
        async for chunk in self._chunks():
            size += len(chunk)
            if size > self._max:
                raise MessageTooLarge(f"The MCP server's answer is over {self._max} bytes.")
            chunks.append(chunk)
        self.settle(self.status < 500)
        return b"".join(chunks)

    async def events(self) -> AsyncIterator[McpEvent]:
        """The stream's events as they complete; an event over the limit ends it in error."""
        decoder, pending = SSEDecoder(), 0
        async for chunk in self._chunks():
            pending += len(chunk)
            for event in decoder.feed(chunk):
                pending -= len(event.raw)
                yield _event(event)
            if pending > self._max:
                raise MessageTooLarge(f"An MCP server's message is over {self._max} bytes.")
        for event in decoder.flush():
            yield _event(event)
        self.settle(True)

    async def aclose(self) -> None:
        """An answer closed before its end was neither a failure nor a success, unless its
        status said so (a half-open breaker's probe must still be decided)."""
        self.settle(self.status < 500)
        await self.response.aclose()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_bytes():
                yield chunk
        except httpx.TimeoutException as exc:
            self.settle(False)
            raise UpstreamTimeout("The MCP server stopped answering.", str(exc)) from exc
        except httpx.HTTPError as exc:
            self.settle(False)
            raise UpstreamError("The MCP server's answer broke off.", str(exc)) from exc


class McpUpstream:
    """One configured MCP server."""

    def __init__(self, name: str, settings: McpServerSettings, client: httpx.AsyncClient) -> None:
        self.name, self.settings, self.client = name, settings, client
        self.breaker = Breaker(settings.breaker_failures, settings.breaker_open_s)
        self.streams = 0  # the server's GET streams open in this worker

    async def send(
        self, method: str, headers: dict[str, str], body: bytes | None = None, stream: bool = False
    ) -> McpReply:
        """`stream`: a GET's long-lived event stream, which may sit idle between events."""
        settings = self.settings
        read = None if stream else settings.timeout_s
        timeout = httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s, read=read)
        request = self.client.build_request(
            method, settings.url, headers={**headers, **settings.headers}, content=body,
            timeout=timeout,
        )  # fmt: skip
        breaker = self.breaker
        if not breaker.allows():
            failures = breaker.failures
            message = f"The MCP server failed {failures} times in a row; it is not asked for now."
            raise ServerUnavailable(message)
        breaker.started()
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            breaker.failed()
            raise UpstreamTimeout("The MCP server did not answer in time.", str(exc)) from exc
        except httpx.HTTPError as exc:
            breaker.failed()
            raise UpstreamError("The MCP server could not be reached.", str(exc)) from exc
        return McpReply(response, settings.max_response_bytes, self._settled)

    def _settled(self, ok: bool) -> None:
        if ok:
            self.breaker.succeeded()
        else:
            self.breaker.failed()


def _event(event: SSEEvent) -> McpEvent:
    ids = [
        line[3:].strip()
        for line in event.raw.decode("utf-8", "replace").splitlines()
        if line.startswith("id:")
    ]
    return McpEvent(ids[-1] if ids else None, event.data)
