"""What the pipeline asks of a wire API: a codec decodes the client's bytes into a
`Conversation` and encodes the pipeline's outcomes (answers, stream events, blocks) back into
its own shapes. One package per API in `api/` implements it; the pipeline only calls it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

from guardproxy.core.conversation import Conversation
from guardproxy.core.fields import FieldMap
from guardproxy.core.sse import SSEEvent
from guardproxy.errors import GuardproxyError
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.masking import Masker
from guardproxy.pipeline.usage import TokenUsage


class StreamCodec(Protocol):
    """One stream's events, read and written in its API's shapes (state per stream)."""

    def text(self, chunk: dict[str, Any]) -> str:
        """The new text an event carries for the output check (deltas only, never a
        summary of text already counted)."""
        ...

    def in_call(self, chunk: dict[str, Any]) -> bool:
        """Whether the event is part of a tool call streamed as fragments."""
        ...

    def is_end(self, event: SSEEvent, chunk: dict[str, Any] | None) -> bool:
        """Events held back until the final check of the whole answer."""
        ...

    def observe(self, chunk: dict[str, Any]) -> None:
        """Note what a cut-off needs (ids, open blocks, sequence numbers) as events pass."""
        ...

    def texts(self, events: Sequence[SSEEvent]) -> list[str]:
        """A whole buffered stream's answers, one per choice."""
        ...

    def released(self, events: Sequence[SSEEvent]) -> None:
        """Events that reached the client: a cut-off continues from what the client saw."""
        ...

    def consumed(self) -> TokenUsage:
        """The tokens the upstream spent on the stream, as far as the proxy read it."""
        ...

    def masking(self, masker: Masker, types: Collection[str]) -> EventRewriter | None: ...

    def block_error_events(self, exchange: Exchange) -> list[bytes]:
        """A block as the API's error, once the stream has begun (`on_block: error`)."""
        ...

    def refusal_after(self, exchange: Exchange, refusal: str) -> list[bytes]:
        """The tenant's refusal as the rest of a stream already under way."""
        ...

    def error_event(self, exc: GuardproxyError) -> bytes:
        """A failure once a 200 stream has begun."""
        ...


class EventRewriter(Protocol):
    """Redaction of a stream, event by event, across event boundaries."""

    def rewrite(self, event: SSEEvent) -> bytes: ...

    def finish(self) -> bytes:
        """Whatever is still held back when the stream ends."""
        ...


class Codec(Protocol):
    """One wire API. Decoding is `decode(raw) -> Conversation`; the rest encodes."""

    @property
    def api(self) -> str: ...  # as the audit record names it

    @property
    def upstream_path(self) -> str: ...  # where the upstream serves it, below its base URL

    @property
    def answer_fields(self) -> FieldMap: ...  # which strings of an answer are structural

    def decode(self, raw: bytes) -> Conversation: ...

    def mask_request(
        self, request: Conversation, masker: Masker, types: Collection[str]
    ) -> tuple[bytes, int]:
        """The body with every judged text masked, and the spans masked; with none, the
        client's bytes untouched."""
        ...

    def with_media(self, part: dict[str, Any], data_url: str) -> dict[str, Any]:
        """A media part carrying `data_url` (the judged bytes) instead of what it had."""
        ...

    def answer_texts(self, answer: dict[str, Any]) -> list[str]:
        """What a whole answer says, one string per choice."""
        ...

    def mask_answer(
        self, answer: dict[str, Any], masker: Masker, types: Collection[str]
    ) -> tuple[dict[str, Any], int]: ...

    def buffers_streams(self, request: Conversation) -> bool:
        """Streams that windows cannot judge as one text (several choices)."""
        ...

    def refusal(
        self, request: Conversation, exchange: Exchange, refusal: str, usage: Any
    ) -> dict[str, Any]:
        """A whole answer that is the tenant's refusal."""
        ...

    def refusal_events(
        self, request: Conversation, exchange: Exchange, refusal: str
    ) -> list[bytes]:
        """A stream that is the tenant's refusal, from its first event."""
        ...

    def content_filter_error(self, exchange: Exchange) -> dict[str, Any]:
        """A block as a 400 error body (`on_block: error`)."""
        ...

    def error(
        self, message: str, status: int, type_: str, param: str | None, code: str | None
    ) -> dict[str, Any]:
        """An error body in the API's shape."""
        ...

    def stream(self, request: Conversation) -> StreamCodec: ...
