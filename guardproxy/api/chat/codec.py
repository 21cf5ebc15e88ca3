"""Chat Completions, encoded: answers, stream events and block shapes as OpenAI sends them."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

from guardproxy.api import openai_errors
from guardproxy.api.answers import ANSWER_FIELDS
from guardproxy.api.chat.decode import StreamText, choice_texts, choices_of, decode_chat, said
from guardproxy.api.chat.masking import EventMasker, mask_completion
from guardproxy.core.conversation import Conversation
from guardproxy.core.sse import DONE, SSEEvent, encode_event
from guardproxy.errors import GuardproxyError
from guardproxy.pipeline.codec import EventRewriter, StreamCodec
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.masking import Masker, mask_locations
from guardproxy.pipeline.usage import StreamUsage, TokenUsage

NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def choice_count(value: Any) -> int:
    """`n` as a lax validator coerces it (an integral float, a numeric string); an `n` that
    none would take reads as several, so an answer is never judged as one by mistake."""
    if value is None:
        return 1
    if isinstance(value, bool):
        return int(value)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        return 2
    return int(number) if number.is_integer() else 2


class ChatCodec:
    """`POST /v1/chat/completions`."""

    api = "chat.completions"
    upstream_path = "/chat/completions"
    answer_fields = ANSWER_FIELDS["chat.completions"]

    def decode(self, raw: bytes) -> Conversation:
        return decode_chat(raw, self)

    def mask_request(
        self, request: Conversation, masker: Masker, types: Collection[str]
    ) -> tuple[bytes, int]:
        return mask_locations(request, request.texts, masker, types)

    def with_media(self, part: dict[str, Any], data_url: str) -> dict[str, Any]:
        image = part.get("image_url")
        details = image if isinstance(image, dict) else {}
        return {**part, "image_url": {**details, "url": data_url}}

    def answer_texts(self, answer: dict[str, Any]) -> list[str]:
        return choice_texts(answer)

    def mask_answer(
        self, answer: dict[str, Any], masker: Masker, types: Collection[str]
    ) -> tuple[dict[str, Any], int]:
        return mask_completion(answer, masker, types)

    def buffers_streams(self, request: Conversation) -> bool:
        """Windows judge one text; each of several choices (`n` > 1) is its own answer.
        `n` is read as vLLM's pydantic model reads it, so `"2"` and `2.0` are two choices."""
        return choice_count(request.body.get("n")) > 1

    def refusal(
        self, request: Conversation, exchange: Exchange, refusal: str, usage: Any
    ) -> dict[str, Any]:
        message = {"role": "assistant", "content": None, "refusal": None}
        message[refusal_field(request)] = refusal
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": "content_filter",
        }
        return {
            "id": f"chatcmpl-gp-{exchange.request_id}",
            "object": "chat.completion",
            "created": int(exchange.started),
            "model": request.model,
            "choices": [choice],
            "usage": usage or NO_USAGE,
            "guardproxy": exchange.client_view(),
        }

    def refusal_events(
        self, request: Conversation, exchange: Exchange, refusal: str
    ) -> list[bytes]:
        return refusal_events(request, exchange, refusal)

    def content_filter_error(self, exchange: Exchange) -> dict[str, Any]:
        return openai_errors.content_filter_error(exchange, "messages")

    def error(
        self, message: str, status: int, type_: str, param: str | None, code: str | None
    ) -> dict[str, Any]:
        return openai_errors.error_body(message, type_, param, code)

    def stream(self, request: Conversation) -> StreamCodec:
        return ChatStream(request)


CHAT = ChatCodec()


def parse_chat_request(raw: bytes) -> Conversation:
    return CHAT.decode(raw)


class ChatStream:
    """A chat-completion stream: `choices[].delta` chunks, then `[DONE]`."""

    def __init__(self, request: Conversation) -> None:
        self.request = request
        self.identity: dict[str, Any] | None = None  # the stream's id, created and model
        self.usage = StreamUsage()

    def text(self, chunk: dict[str, Any]) -> str:
        return "".join(said(c.get("delta")) for c in choices_of(chunk))

    def in_call(self, chunk: dict[str, Any]) -> bool:
        deltas = [c.get("delta") for c in choices_of(chunk)]
        return any(
            isinstance(d, dict) and (d.get("tool_calls") or d.get("function_call")) for d in deltas
        )

    def is_end(self, event: SSEEvent, chunk: dict[str, Any] | None) -> bool:
        return event.data is not None and event.data.strip() == DONE

    def observe(self, chunk: dict[str, Any]) -> None:
        """The usage chunk (`choices: []`) is the upstream's final count; vLLM's
        `continuous_usage_stats` puts a running one on every chunk before it."""
        if self.identity is None:
            keys = ("id", "created", "model")
            self.identity = {k: chunk[k] for k in keys if k in chunk} or None
        self.usage.reported(chunk.get("usage"), final=chunk.get("choices") == [])
        self.usage.generated(self.text(chunk))

    def consumed(self) -> TokenUsage:
        return self.usage.consumed()

    def texts(self, events: Sequence[SSEEvent]) -> list[str]:
        text = StreamText()
        for event in events:
            text.add(event)
        return text.texts()

    def masking(self, masker: Masker, types: Collection[str]) -> EventRewriter | None:
        return EventMasker.maybe(masker, types)

    def block_error_events(self, exchange: Exchange) -> list[bytes]:
        body = openai_errors.content_filter_error(exchange, "messages")
        return [encode_event({**body, "guardproxy": exchange.client_view()})]

    def refusal_after(self, exchange: Exchange, refusal: str) -> list[bytes]:
        return refusal_events(self.request, exchange, refusal, self.identity, started=True)

    def released(self, events: Sequence[SSEEvent]) -> None:
        return None

    def error_event(self, exc: GuardproxyError) -> bytes:
        return openai_errors.stream_error_event(exc)


def refusal_events(
    request: Conversation,
    exchange: Exchange,
    refusal: str,
    identity: dict[str, Any] | None = None,
    started: bool = False,
) -> list[bytes]:
    """A refusal told as OpenAI streams an answer: the role chunk (unless the stream has
    `started`), the text, a `content_filter` finish chunk, the usage chunk when the client
    asked for one, `[DONE]`. `identity` keeps the upstream stream's `id` and `created`."""
    base = {
        "id": f"chatcmpl-gp-{exchange.request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.model,
        **{k: v for k, v in (identity or {}).items() if k in ("id", "created", "model")},
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return encode_event({**base, "choices": [choice]})

    events = [] if started else [chunk({"role": "assistant", "content": ""})]
    events += [chunk({refusal_field(request): refusal})]
    finish = {**base, "choices": [_finish_choice()], "guardproxy": exchange.client_view()}
    events.append(encode_event(finish))
    if _wants_usage(request):
        events.append(encode_event({**base, "choices": [], "usage": chat_usage(exchange.usage)}))
    return [*events, encode_event(DONE)]


def chat_usage(usage: TokenUsage | None) -> dict[str, int]:
    """What a blocked stream consumed (none: nothing), as the usage chunk tells it."""
    return NO_USAGE if usage is None else usage.counts("prompt_tokens", "completion_tokens")


def refusal_field(request: Conversation) -> str:
    """Where the refusal text goes: `content`, or `refusal` for structured outputs, as OpenAI
    does, so a client that parses the content as JSON (`response_format=Model`) is not handed
    prose and raises its content-filter error instead."""
    response_format = request.body.get("response_format")
    structured = isinstance(response_format, dict) and response_format.get("type") == "json_schema"
    return "refusal" if structured else "content"


def _finish_choice() -> dict[str, Any]:
    return {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "content_filter"}


def _wants_usage(request: Conversation) -> bool:
    options = request.body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
