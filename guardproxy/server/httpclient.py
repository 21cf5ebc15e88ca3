"""The outbound HTTP clients: httpx's API over aiohttp's connection stack (httpx-aiohttp).

Measured against httpx's own transport in `bench/transport.py` (see bench/README.md), it
keeps the httpx API, so the adapters, their error translation and respx tests stay as they are.
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class Transport(AiohttpTransport):
    """httpx-aiohttp 0.2.0 maps a refused connection (`ClientConnectorError`, a subclass of
    `ClientConnectionError`) to `httpx.ConnectTimeout`; it is a `ConnectError`, so an
    unreachable upstream is a 502, not a 504."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            cause = exc.__cause__
            refused = isinstance(cause, aiohttp.ClientConnectorError)
            if refused and not isinstance(cause, aiohttp.ServerTimeoutError):
                raise httpx.ConnectError(str(exc), request=request) from cause
            raise


def http_client(
    kind: str, limits: httpx.Limits, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """An outbound client: the given transport (tests), else aiohttp's or httpx's own stack."""
    if transport is None and kind == "aiohttp":
        transport = Transport(limits=limits)
    return httpx.AsyncClient(limits=limits, transport=transport)
