"""`WIRE_APIS`, the one list of the wire APIs: the server's routes, the reviewer's filters and
the trace spans read it."""

from __future__ import annotations

from dataclasses import dataclass

from guardproxy.api.chat.codec import CHAT
from guardproxy.api.messages.codec import MESSAGES
from guardproxy.api.responses.codec import RESPONSES
from guardproxy.pipeline.codec import Codec


@dataclass(frozen=True)
class WireApi:
    path: str  # where the proxy serves it
    codec: Codec

    @property
    def name(self) -> str:  # as the audit record names it
        return self.codec.api


WIRE_APIS = (
    WireApi("/v1/chat/completions", CHAT),
    WireApi("/v1/responses", RESPONSES),
    WireApi("/v1/messages", MESSAGES),
)
MCP_ROUTE = "/mcp/{name}"  # the MCP gateway (api/mcp/), not a chat codec
ROUTES = {api.name: api.path for api in WIRE_APIS} | {"mcp": MCP_ROUTE}
API_NAMES = tuple(ROUTES)  # every `api` an audit record can name
