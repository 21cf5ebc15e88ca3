"""The upstream seam: one method from a chat request to a reply (whole or streamed)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from guardproxy.core.conversation import Conversation

# Response headers worth relaying to the client; hop-by-hop and framing headers are not.
RELAYED_RESPONSE_HEADERS = (
    "x-request-id",
    "openai-processing-ms",
    "openai-version",
    "retry-after",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)


async def _nothing_to_close() -> None:
    return None


@dataclass
class UpstreamReply:
    """An upstream answer. A stream must be closed by whoever consumes it (`aclose`)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    aclose: Callable[[], Awaitable[None]] = _nothing_to_close
    content_type: str = "application/json"

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Upstream(Protocol):
    async def send(
        self, request: Conversation, body: bytes, headers: dict[str, str]
    ) -> UpstreamReply:
        """Send `body` (the client's bytes, redacted if the policy says so) upstream.

        Raises UpstreamError / UpstreamTimeout when no answer comes at all; an HTTP error
        answer is a reply like any other, to be relayed.
        """
        ...

    async def list_models(self) -> UpstreamReply: ...

    def url(self, request: Conversation) -> str | None:
        """Where `request` is sent, for its trace span; None where a library picks it."""
        ...

    async def probe(self) -> str | None:
        """None when reachable, else a short reason."""
        ...
