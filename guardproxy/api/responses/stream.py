"""Responses API streams: semantic events, read for the output check and written for blocks.

    response.created ─ response.in_progress ─ response.output_item.added ─
    response.content_part.added ─ response.output_text.delta … ─ response.output_text.done ─
    response.content_part.done ─ response.output_item.done ─ response.completed

Only `*.delta` events carry new text (and a call's name, on `output_item.added`); the `*.done`
events and `response.completed` repeat what the deltas said, so they are masked but never
counted twice. The end event (`response.completed`, `.incomplete`, `.failed`) is held until
the final check. A block mid-stream closes the items the client saw open (`released.py`),
adds a refusal message item and ends with `response.incomplete`
(`incomplete_details.reason: content_filter`) listing them all, with the usage consumed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from guardproxy.api import openai_errors
from guardproxy.api.responses.released import ReleasedOutput
from guardproxy.api.responses.shapes import (
    CALL_ITEMS,
    base_response,
    incomplete_response,
    mask_item,
    refusal_item,
    responses_usage,
)
from guardproxy.core.conversation import Conversation
from guardproxy.core.sse import DONE, SSEEvent, chunk_of, encode_typed
from guardproxy.errors import GuardproxyError
from guardproxy.pipeline.codec import EventRewriter
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.masking import Masker, mask_strings
from guardproxy.pipeline.replies import public_message, status_of
from guardproxy.pipeline.usage import StreamUsage, TokenUsage
from guardproxy.redaction import StreamRedactor

END_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
NOT_TEXT = frozenset({"response.audio.delta"})  # base64 audio, not words
CALL_PREFIXES = ("response.function_call_arguments.", "response.custom_tool_call_input.")
ITEM_EVENTS = frozenset({"response.output_item.added", "response.output_item.done"})
# The `*.done` events and the field that repeats their deltas in full.
DONE_FIELDS = {
    "response.output_text.done": "text",
    "response.refusal.done": "refusal",
    "response.reasoning_text.done": "text",
    "response.reasoning_summary_text.done": "text",
    "response.function_call_arguments.done": "arguments",
    "response.custom_tool_call_input.done": "input",
}


def _kind(chunk: dict[str, Any] | None) -> str:
    kind = chunk.get("type") if chunk else None
    return kind if isinstance(kind, str) else ""


def _is_call_item(chunk: dict[str, Any]) -> bool:
    item = chunk.get("item")
    return isinstance(item, dict) and item.get("type") in CALL_ITEMS


class ResponsesStream:
    def __init__(self, request: Conversation) -> None:
        self.request = request
        self.response: dict[str, Any] | None = None  # as `response.created` announced it
        self.output = ReleasedOutput()
        self.masker: ResponsesMasker | None = None  # feeds `output` what it sends, masked
        self.usage = StreamUsage()

    def text(self, chunk: dict[str, Any]) -> str:
        kind = _kind(chunk)
        delta = chunk.get("delta")
        if kind.endswith(".delta") and kind not in NOT_TEXT and isinstance(delta, str):
            return delta
        if kind == "response.output_item.added" and _is_call_item(chunk):
            name = chunk["item"].get("name")
            return name if isinstance(name, str) else ""
        return ""

    def in_call(self, chunk: dict[str, Any]) -> bool:
        kind = _kind(chunk)
        return kind.startswith(CALL_PREFIXES) or (kind in ITEM_EVENTS and _is_call_item(chunk))

    def is_end(self, event: SSEEvent, chunk: dict[str, Any] | None) -> bool:
        """The end event carries the upstream's usage; it is held, never observed, so its
        usage is noted as the moderator first sees it, here."""
        if chunk is not None and _kind(chunk) in END_EVENTS:
            response = chunk.get("response")
            self.usage.reported(response.get("usage") if isinstance(response, dict) else None, True)
            return True
        return event.data is not None and event.data.strip() == DONE

    def observe(self, chunk: dict[str, Any]) -> None:
        kind = _kind(chunk)
        if kind == "response.created" and isinstance(chunk.get("response"), dict):
            self.response = chunk["response"]
        self.usage.generated(self.text(chunk))

    def consumed(self) -> TokenUsage:
        return self.usage.consumed()

    def texts(self, events: Sequence[SSEEvent]) -> list[str]:
        chunks = [chunk_of(event) for event in events]
        return ["".join(self.text(chunk) for chunk in chunks if chunk)]

    def masking(self, masker: Masker, types: Collection[str]) -> EventRewriter | None:
        self.masker = ResponsesMasker(masker, types, self.output) if types else None
        return self.masker

    def block_error_events(self, exchange: Exchange) -> list[bytes]:
        return [self._event("error", code="content_filter", message=openai_errors.BLOCKED_MESSAGE)]

    def refusal_after(self, exchange: Exchange, refusal: str) -> list[bytes]:
        return self.refusal(exchange, refusal, started=True)

    def released(self, events: Sequence[SSEEvent]) -> None:
        """What the client has seen, unless the masker tells it as it sends it masked."""
        if self.masker is None:
            for chunk in filter(None, map(chunk_of, events)):
                self.output.add(chunk)

    def error_event(self, exc: GuardproxyError) -> bytes:
        _, _, code = status_of(exc)
        return self._event("error", code=code, message=public_message(exc), param=None)

    def refusal(self, exchange: Exchange, refusal: str, started: bool) -> list[bytes]:
        """The items the client saw closed, the refusal as a message item of its own, then
        `response.incomplete` listing them all, with what the upstream consumed."""
        response = self.response or base_response(self.request, exchange)
        events = self.output.close(self._event)
        if not started:
            events += [
                self._event("response.created", response=response),
                self._event("response.in_progress", response=response),
            ]
        item, index = refusal_item(exchange, refusal), self.output.count
        at = {"item_id": item["id"], "output_index": index}
        part = item["content"][0]
        events += [
            self._event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            ),
            self._event(
                "response.content_part.added", **at, content_index=0, part={**part, "text": ""}
            ),
            self._event(
                "response.output_text.delta", **at, content_index=0, delta=refusal, logprobs=[]
            ),
            self._event(
                "response.output_text.done", **at, content_index=0, text=refusal, logprobs=[]
            ),
            self._event("response.content_part.done", **at, content_index=0, part=part),
            self._event("response.output_item.done", output_index=index, item=item),
        ]
        final = incomplete_response(response, [*self.output.output(), item])
        final |= {"usage": responses_usage(exchange.usage), "guardproxy": exchange.client_view()}
        return [*events, self._event("response.incomplete", response=final)]

    def _event(self, kind: str, **fields: Any) -> bytes:
        self.output.sequence += 1
        return encode_typed({"type": kind, "sequence_number": self.output.sequence, **fields})


class ResponsesMasker:
    """Redaction of a Responses stream: each delta stream (one per item, content part and
    kind) through its own stream redactor; the `*.done` events and the final response, which
    repeat the text in full, masked whole. Text a redactor still holds when its `*.done`
    event arrives goes out as one more delta just before it."""

    def __init__(self, masker: Masker, types: Collection[str], released: ReleasedOutput) -> None:
        self.masker, self.types = masker, types
        self.redactors: dict[tuple[Any, ...], StreamRedactor] = {}
        self.released = released  # told every event as the client receives it

    def rewrite(self, event: SSEEvent) -> bytes:
        chunk = chunk_of(event)
        kind = _kind(chunk)
        if chunk is None:
            return event.raw
        if kind.endswith(".delta") and kind not in NOT_TEXT and isinstance(chunk.get("delta"), str):
            return self._delta(event, chunk, kind)
        if kind in DONE_FIELDS:
            return self._done(chunk, kind)
        masked, found = self._whole(chunk)
        self.released.add(masked)
        return encode_typed(masked) if found else event.raw

    def finish(self) -> bytes:
        self.redactors.clear()  # every delta stream ends with its `*.done` event
        return b""

    def _delta(self, event: SSEEvent, chunk: dict[str, Any], kind: str) -> bytes:
        redactor = self.redactors.setdefault(_key(chunk, kind), self._new())
        text = redactor.feed(chunk["delta"])
        self.released.add({**chunk, "delta": text})
        return event.raw if text == chunk["delta"] else encode_typed({**chunk, "delta": text})

    def _done(self, chunk: dict[str, Any], kind: str) -> bytes:
        redactor = self.redactors.pop(_key(chunk, kind), None)
        held = redactor.flush() if redactor else ""
        name = DONE_FIELDS[kind]
        value = chunk.get(name)
        masked = {**chunk}
        if isinstance(value, str):
            masked[name] = self.masker.mask(value, self.types)[0]
        out = encode_typed(masked)
        if held:
            delta = {k: v for k, v in chunk.items() if k != name}
            delta |= {"type": kind.removesuffix(".done") + ".delta", "delta": held}
            self.released.add(delta)
            out = encode_typed(delta) + out
        self.released.add(masked)
        return out

    def _whole(self, chunk: dict[str, Any]) -> tuple[dict[str, Any], int]:
        for name in ("item", "part"):
            if isinstance(chunk.get(name), dict):
                masked, found = mask_strings(chunk[name], self.masker, self.types)
                return {**chunk, name: masked}, found
        response = chunk.get("response")
        if isinstance(response, dict) and isinstance(response.get("output"), list):
            output = [mask_item(item, self.masker, self.types) for item in response["output"]]
            found = sum(count for _, count in output)
            masked_response = {**response, "output": [item for item, _ in output]}
            return {**chunk, "response": masked_response}, found
        return chunk, 0

    def _new(self) -> StreamRedactor:
        return StreamRedactor(self.masker.redactor, self.types)


def _key(chunk: dict[str, Any], kind: str) -> tuple[Any, ...]:
    stem = kind.rsplit(".", 1)[0]
    return (stem, chunk.get("output_index"), chunk.get("content_index"), chunk.get("summary_index"))
