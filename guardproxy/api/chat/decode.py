"""Chat Completions, decoded: the request validated, with the parts the guards judge pulled out.

The parsed body is only read: the upstream gets the client's bytes as sent (`Conversation.raw`).
The codec that encodes answers, streams and blocks is `chat_codec.py`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from guardproxy.api.fields import CHAT_FIELDS
from guardproxy.core.conversation import (
    OPERATOR_ROLES,
    Conversation,
    MediaKind,
    MediaPart,
    Turn,
    decode_object,
    model_and_stream,
)
from guardproxy.core.conversation import text_of as message_text
from guardproxy.core.fields import close
from guardproxy.core.sse import DONE, SSEEvent, chunk_of
from guardproxy.errors import RequestError
from guardproxy.pipeline.codec import Codec

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Content part types the guards can judge; any other type is unjudged (see `unjudged_parts`).
JUDGED_PART_TYPES = frozenset({"text", "refusal", "image_url", "video_url"})
MEDIA_PART_TYPES: dict[str, MediaKind] = {"image_url": "image", "video_url": "video"}
__all__ = ["OPERATOR_ROLES", "Turn", "decode_chat", "message_text"]


def decode_chat(raw: bytes, codec: Codec) -> Conversation:
    body = decode_object(raw)
    model, stream = model_and_stream(body)
    messages = _messages(body)
    last = _last_user_index(messages)
    prompt = message_text(messages[last].get("content")) if last is not None else ""
    media = tuple(  # in any role: a system or tool message's image is read like a user's
        part
        for index, message in enumerate(messages)
        for part in _media(message.get("content"), index)
    )
    history = tuple(turn for i, m in enumerate(messages) for turn in _turns(messages, i, i == last))
    request = Conversation(
        codec,
        raw,
        body,
        model,
        stream,
        prompt,
        f"messages[{last}]" if last is not None else "",
        media,
        history,
        _unjudged(messages),
    )
    return close(request, CHAT_FIELDS)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]")
    return messages


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise RequestError(f"'{where}' must be an object.", where)
    if message.get("role") not in ROLES:
        raise RequestError(f"'{where}.role' must be one of {sorted(ROLES)}.", f"{where}.role")
    content = message.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            _check_part(part, f"{where}.content[{j}]")
    elif content is not None and not isinstance(content, str):
        raise RequestError(f"'{where}.content' must be a string or an array.", f"{where}.content")


def _check_part(part: Any, where: str) -> None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise RequestError(f"'{where}' must be an object with a 'type'.", where)
    if part["type"] == "text" and not isinstance(part.get("text"), str):
        raise RequestError(f"'{where}.text' must be a string.", f"{where}.text")
    kind = part["type"]
    if kind in MEDIA_PART_TYPES and not isinstance(_media_url(part), str):
        raise RequestError(f"'{where}.{kind}.url' must be a string.", f"{where}.{kind}")


def _media_url(part: dict[str, Any]) -> Any:
    media = part.get(part["type"])
    return media.get("url") if isinstance(media, dict) else media


def _last_user_index(messages: list[dict[str, Any]]) -> int | None:
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    return users[-1] if users else None


def _turns(messages: list[dict[str, Any]], index: int, is_last_user: bool) -> list[Turn]:
    """What of one message is judged besides the last user turn's text. An assistant turn
    is judged as the answer to the message before it (a forged one is a known jailbreak)."""
    message = messages[index]
    role, where = message["role"], f"messages[{index}]"
    turns = []
    if role == "assistant":
        before = message_text(messages[index - 1].get("content")) if index else ""
        turns.append(Turn(where, role, said(message), before))
    elif not is_last_user:
        turns.append(Turn(where, role, message_text(message.get("content"))))
    name = message.get("name")
    if isinstance(name, str):
        turns.append(Turn(f"{where}.name", role, name))
    return [turn for turn in turns if turn.text.strip()]


def _unjudged(messages: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(
        f"messages[{i}].content[{j}]"
        for i, message in enumerate(messages)
        if isinstance(message.get("content"), list)
        for j, part in enumerate(message["content"])
        if part["type"] not in JUDGED_PART_TYPES
    )


def _media(content: Any, message: int) -> tuple[MediaPart, ...]:
    if not isinstance(content, list):
        return ()
    return tuple(
        MediaPart(MEDIA_PART_TYPES[p["type"]], _media_url(p), ("messages", message, "content", i))
        for i, p in enumerate(content)
        if p.get("type") in MEDIA_PART_TYPES
    )


# Fields of an answer message (or stream delta) that carry text a reader sees. Everything here
# is checked by the output guard and masked by redaction; nothing else is text.
TEXT_FIELDS = ("content", "reasoning_content", "reasoning", "refusal")


def choice_texts(completion: dict[str, Any]) -> list[str]:
    """What a non-streamed completion says, one string per choice."""
    choices = completion.get("choices")
    if not isinstance(choices, list):
        return []
    return [said(c.get("message")) for c in choices if isinstance(c, dict)]


def said(message: Any) -> str:
    """All the text an answer message or stream delta carries: content (string or parts),
    reasoning, refusal, tool and function calls, audio transcript."""
    if not isinstance(message, dict):
        return ""
    parts = [message_text(message.get(name)) for name in TEXT_FIELDS]
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        parts.append(_call_text(call.get("function") if isinstance(call, dict) else None))
    parts.append(_call_text(message.get("function_call")))
    audio = message.get("audio")
    if isinstance(audio, dict):
        parts.append(message_text(audio.get("transcript")))
    return "".join(p for p in parts if p)


def _call_text(function: Any) -> str:
    if not isinstance(function, dict):
        return ""
    return "".join(v for k in ("name", "arguments") if isinstance(v := function.get(k), str))


def choices_of(chunk: dict[str, Any]) -> list[dict[str, Any]]:
    choices = chunk.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def index_of(choice: dict[str, Any]) -> int:
    index = choice.get("index", 0)
    return index if isinstance(index, int) else 0


@dataclass
class StreamText:
    """Assembles what a chat-completion stream says, one string per choice index."""

    parts: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    done: bool = False

    def add(self, event: SSEEvent) -> None:
        if event.data is not None and event.data.strip() == DONE:
            self.done = True
        chunk = chunk_of(event)
        for choice in choices_of(chunk) if chunk else []:
            self.parts[index_of(choice)].append(said(choice.get("delta")))

    def texts(self) -> list[str]:
        return ["".join(self.parts[i]) for i in sorted(self.parts)]
