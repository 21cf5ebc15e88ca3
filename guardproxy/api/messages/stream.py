"""Anthropic Messages streams, read for the output check and written for blocks.

    message_start ─ content_block_start ─ content_block_delta (text_delta | input_json_delta
    | thinking_delta)… ─ content_block_stop ─ … ─ message_delta (stop_reason, usage) ─ message_stop

A `tool_use` block is held from its start to its stop, so the call is judged whole (name and
input) and never released half-sent. `message_delta` and `message_stop` are held until the
final check. A block mid-stream closes the open block, adds a text block with the refusal and
ends with `stop_reason: "refusal"`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from guardproxy.api.messages.shapes import (
    BLOCKED_MESSAGE,
    anthropic_error,
    delta_usage,
    message_shell,
)
from guardproxy.core.conversation import Conversation
from guardproxy.core.sse import SSEEvent, chunk_of, encode_typed
from guardproxy.errors import GuardproxyError
from guardproxy.pipeline.codec import EventRewriter
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.masking import Masker
from guardproxy.pipeline.replies import public_message, status_of
from guardproxy.pipeline.usage import StreamUsage, TokenUsage
from guardproxy.redaction import StreamRedactor

END_EVENTS = frozenset({"message_delta", "message_stop"})
# The text field of each delta type; `signature_delta` carries no words.
DELTA_TEXT = {
    "text_delta": "text",
    "input_json_delta": "partial_json",
    "thinking_delta": "thinking",
}
CALL_BLOCKS = frozenset({"tool_use", "server_tool_use"})


def _kind(chunk: dict[str, Any] | None) -> str:
    kind = chunk.get("type") if chunk else None
    return kind if isinstance(kind, str) else ""


def _delta(chunk: dict[str, Any]) -> tuple[str, str] | None:
    """(delta type, its text) of a `content_block_delta`."""
    delta = chunk.get("delta")
    kind = delta.get("type") if isinstance(delta, dict) else None
    if not isinstance(delta, dict) or kind not in DELTA_TEXT:
        return None
    text = delta.get(DELTA_TEXT[str(kind)])
    return (str(kind), text) if isinstance(text, str) else None


class MessagesStream:
    def __init__(self, request: Conversation) -> None:
        self.request = request
        self.message: dict[str, Any] | None = None  # as `message_start` announced it
        self.call: int | None = None  # the tool_use block being read, start to stop
        self.call_stopped = False
        self.open: set[int] = set()  # blocks the client has seen start and not stop
        self.next_index = 0  # the index a refusal block takes
        self.usage = StreamUsage()

    def text(self, chunk: dict[str, Any]) -> str:
        kind = _kind(chunk)
        if kind == "content_block_delta":
            found = _delta(chunk)
            return found[1] if found else ""
        block = chunk.get("content_block")
        if kind == "content_block_start" and isinstance(block, dict):
            text = block.get("name") if block.get("type") in CALL_BLOCKS else block.get("text")
            return text if isinstance(text, str) else ""
        return ""

    def in_call(self, chunk: dict[str, Any]) -> bool:
        """Every event from a tool_use block's start to its stop, pings included."""
        return self.call is not None

    def is_end(self, event: SSEEvent, chunk: dict[str, Any] | None) -> bool:
        """`message_delta` carries the upstream's final usage; it is held, never observed,
        so its usage is noted as the moderator first sees it, here."""
        if chunk is not None and _kind(chunk) == "message_delta":
            self.usage.reported(chunk.get("usage"), final=True)
        return _kind(chunk) in END_EVENTS

    def observe(self, chunk: dict[str, Any]) -> None:
        kind, index = _kind(chunk), chunk.get("index")
        if self.call_stopped:
            self.call, self.call_stopped = None, False
        if kind == "message_start" and isinstance(chunk.get("message"), dict):
            self.message = chunk["message"]
            self.usage.reported(self.message.get("usage"))  # the input, and a first output
        self.usage.generated(self.text(chunk))
        block = chunk.get("content_block")
        if kind == "content_block_start" and isinstance(block, dict):
            self.call = index if block.get("type") in CALL_BLOCKS else None
        elif kind == "content_block_stop" and index == self.call:
            self.call_stopped = True  # the stop event still belongs to the call

    def released(self, events: Sequence[SSEEvent]) -> None:
        for event in events:
            if b"content_block_st" not in event.raw:
                continue
            chunk = chunk_of(event)
            index = chunk.get("index") if chunk else None
            if not isinstance(index, int):
                continue
            if _kind(chunk) == "content_block_start":
                self.open.add(index)
                self.next_index = max(self.next_index, index + 1)
            elif _kind(chunk) == "content_block_stop":
                self.open.discard(index)

    def texts(self, events: Sequence[SSEEvent]) -> list[str]:
        chunks = [chunk_of(event) for event in events]
        return ["".join(self.text(chunk) for chunk in chunks if chunk)]

    def consumed(self) -> TokenUsage:
        return self.usage.consumed()

    def masking(self, masker: Masker, types: Collection[str]) -> EventRewriter | None:
        return MessagesMasker(masker, types) if types else None

    def error_event(self, exc: GuardproxyError) -> bytes:
        status, _, _ = status_of(exc)
        return encode_typed(anthropic_error(public_message(exc), status))

    def block_error_events(self, exchange: Exchange) -> list[bytes]:
        return [encode_typed(anthropic_error(BLOCKED_MESSAGE, 400))]

    def refusal_after(self, exchange: Exchange, refusal: str) -> list[bytes]:
        return self.refusal(exchange, refusal, started=True)

    def refusal(self, exchange: Exchange, refusal: str, started: bool) -> list[bytes]:
        """Open blocks closed, a text block with the refusal, `stop_reason: refusal`."""
        events = []
        if not started:
            message = self.message or message_shell(self.request, exchange)
            events.append(encode_typed({"type": "message_start", "message": message}))
        events += [
            encode_typed({"type": "content_block_stop", "index": i}) for i in sorted(self.open)
        ]
        index = self.next_index
        events += [
            encode_typed(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            ),
            encode_typed(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": refusal},
                }
            ),
            encode_typed({"type": "content_block_stop", "index": index}),
            encode_typed(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "refusal", "stop_sequence": None},
                    "usage": delta_usage(exchange.usage),
                    "guardproxy": exchange.client_view(),
                }
            ),
            encode_typed({"type": "message_stop"}),
        ]
        return events


class MessagesMasker:
    """Redaction of a Messages stream: each content block's deltas through its own stream
    redactor; what a redactor still holds goes out as one more delta before the block's
    `content_block_stop`."""

    def __init__(self, masker: Masker, types: Collection[str]) -> None:
        self.masker, self.types = masker, types
        self.redactors: dict[int, tuple[str, StreamRedactor]] = {}

    def rewrite(self, event: SSEEvent) -> bytes:
        chunk = chunk_of(event)
        if chunk is None:
            return event.raw
        kind, index = _kind(chunk), chunk.get("index")
        if kind == "content_block_delta" and isinstance(index, int):
            return self._delta(event, chunk, index)
        if kind == "content_block_stop" and isinstance(index, int):
            return self._flush(index) + event.raw
        return event.raw

    def finish(self) -> bytes:
        return b"".join(self._flush(index) for index in list(self.redactors))

    def _delta(self, event: SSEEvent, chunk: dict[str, Any], index: int) -> bytes:
        found = _delta(chunk)
        if found is None:
            return event.raw
        kind, text = found
        if index not in self.redactors:
            self.redactors[index] = (kind, StreamRedactor(self.masker.redactor, self.types))
        masked = self.redactors[index][1].feed(text)
        if masked == text:
            return event.raw
        return encode_typed({**chunk, "delta": {**chunk["delta"], DELTA_TEXT[kind]: masked}})

    def _flush(self, index: int) -> bytes:
        kind, redactor = self.redactors.pop(index, ("", None))
        held = redactor.flush() if redactor else ""
        if not held:
            return b""
        delta = {"type": kind, DELTA_TEXT[kind]: held}
        return encode_typed({"type": "content_block_delta", "index": index, "delta": delta})
