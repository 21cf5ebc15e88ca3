"""Anthropic's Messages API: the codec of `POST /v1/messages`.

Messages hold content blocks. `text` and `image` blocks are judged like chat parts,
`tool_use` blocks as the assistant's tool calls (name and input), `tool_result` blocks as
tool results (their text and images), `thinking` blocks as assistant text; `system` is operator
text. Documents, files and server-tool blocks cannot be judged: they are refused unless the
tenant allows them. Errors take Anthropic's shape, `{"type": "error", "error": {...}}`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from guardproxy.api.answers import ANSWER_FIELDS
from guardproxy.api.fields import MESSAGES_FIELDS
from guardproxy.api.messages.shapes import (
    BLOCKED_MESSAGE,
    SKIPPED_BLOCKS,
    TEXT_BLOCKS,
    anthropic_error,
    block_text,
    blocks_text,
    message_shell,
    usage_of,
)
from guardproxy.api.messages.stream import MessagesStream
from guardproxy.core.conversation import (
    Conversation,
    Found,
    Location,
    MediaPart,
    Turn,
    decode_object,
    json_path,
    model_and_stream,
)
from guardproxy.core.fields import close
from guardproxy.errors import RequestError
from guardproxy.pipeline.codec import StreamCodec
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.masking import LocatedMasking, Masker, mask_strings

ROLES = frozenset({"user", "assistant"})
# Anthropic's error types by status (docs.anthropic.com/en/api/errors).


class MessagesCodec(LocatedMasking):
    api = "messages"
    upstream_path = "/messages"
    answer_fields = ANSWER_FIELDS["messages"]

    def decode(self, raw: bytes) -> Conversation:
        body = decode_object(raw)
        model, stream = model_and_stream(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages: Field required (a non-empty array)", "messages")
        found = Found()
        _system(body.get("system"), found)
        _messages(messages, found)
        return close(found.conversation(self, raw, body, model, stream), MESSAGES_FIELDS)

    def with_media(self, part: dict[str, Any], data_url: str) -> dict[str, Any]:
        head, _, data = data_url.partition(",")
        media_type = head.removeprefix("data:").removesuffix(";base64")
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {**part, "source": source}

    def answer_texts(self, answer: dict[str, Any]) -> list[str]:
        content = answer.get("content")
        blocks = content if isinstance(content, list) else []
        return ["".join(block_text(b) for b in blocks if isinstance(b, dict))]

    def mask_answer(
        self, answer: dict[str, Any], masker: Masker, types: Collection[str]
    ) -> tuple[dict[str, Any], int]:
        content = answer.get("content")
        if not isinstance(content, list) or not types:
            return answer, 0
        masked, found = mask_strings(content, masker, types)
        return ({**answer, "content": masked} if found else answer), found

    def refusal(
        self, request: Conversation, exchange: Exchange, refusal: str, usage: Any
    ) -> dict[str, Any]:
        return {
            **message_shell(request, exchange),
            "content": [{"type": "text", "text": refusal}],
            "stop_reason": "refusal",
            "usage": usage_of(usage),
            "guardproxy": exchange.client_view(),
        }

    def refusal_events(
        self, request: Conversation, exchange: Exchange, refusal: str
    ) -> list[bytes]:
        return MessagesStream(request).refusal(exchange, refusal, started=False)

    def content_filter_error(self, exchange: Exchange) -> dict[str, Any]:
        return anthropic_error(BLOCKED_MESSAGE, 400)

    def error(
        self, message: str, status: int, type_: str, param: str | None, code: str | None
    ) -> dict[str, Any]:
        return anthropic_error(message, status)

    def stream(self, request: Conversation) -> StreamCodec:
        return MessagesStream(request)


MESSAGES = MessagesCodec()


def _system(system: Any, found: Found) -> None:
    if system is None:
        return
    if not isinstance(system, str | list):
        raise RequestError("system: Input should be a string or a list of text blocks", "system")
    text = blocks_text(system)
    if text.strip():
        found.history.append(Turn("system", "system", text))


def _messages(messages: list[Any], found: Found) -> None:
    users = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
    last = users[-1] if users else None
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RequestError(f"{where}.role: Input should be 'user' or 'assistant'", where)
        content = message.get("content")
        if not isinstance(content, str | list):
            raise RequestError(f"{where}.content: Input should be a string or a list", where)
        before = blocks_text(messages[index - 1].get("content")) if index else ""
        _message(message["role"], content, ("messages", index), index == last, before, found)


def _message(
    role: str, content: Any, at: Location, is_last: bool, before: str, found: Found
) -> None:
    """A message's own text is one turn (the prompt, for the last user message); each tool
    call and tool result in it is judged as a turn of its own."""
    path = json_path(at)
    text = blocks_text(content)
    if is_last:
        found.prompt, found.prompt_at = text, path
    elif role == "assistant":
        found.history.append(Turn(path, role, text, before))
    else:
        found.history.append(Turn(path, role, text))
    for index, block in enumerate(content if isinstance(content, list) else []):
        _block(block, (*at, "content", index), role, text or before, found)


def _block(block: Any, at: Location, role: str, context: str, found: Found) -> None:
    path = json_path(at)
    kind = block.get("type") if isinstance(block, dict) else None
    if not isinstance(block, dict) or not isinstance(kind, str):
        raise RequestError(f"{path}: Input should be a content block with a 'type'", path)
    if kind in TEXT_BLOCKS or kind in SKIPPED_BLOCKS:
        return
    if kind == "tool_use":
        call = str(block.get("name", "")) + json.dumps(block.get("input", {}), ensure_ascii=False)
        found.history.append(Turn(path, "assistant", call, context))
    elif kind == "tool_result":
        result = block.get("content")
        found.history.append(Turn(path, "tool", blocks_text(result)))
        for index, inner in enumerate(result if isinstance(result, list) else []):
            _block(inner, (*at, "content", index), role, context, found)
    elif kind == "image":
        _image(block, at, found)
    elif kind == "document" and (said := _document_text(block)) is not None:
        found.history.append(Turn(path, role, said))
    else:
        found.unjudged.append(path)  # documents, files, server tools: nothing to judge them by


def _image(block: dict[str, Any], at: Location, found: Found) -> None:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
        found.media.append(MediaPart("image", url, at))
    elif kind == "url" and isinstance(source, dict) and isinstance(source.get("url"), str):
        found.media.append(MediaPart("image", source["url"], at))
    else:
        found.unjudged.append(json_path(at))  # a file_id: the proxy cannot see it


def _document_text(block: dict[str, Any]) -> str | None:
    """A plain-text document's text (`text` source, or `content` blocks), which is judged
    like a message; None for a PDF, a URL or a file, which no guard reads."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "text" and isinstance(source, dict) and isinstance(source.get("data"), str):
        return str(source["data"])
    if kind == "content" and isinstance(source, dict):
        return blocks_text(source.get("content"))
    return None
