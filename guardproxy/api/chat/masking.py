"""Chat Completions' redaction of answers: a whole completion's messages, and a stream's deltas
event by event (text held back across event boundaries until no match can span it)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from guardproxy.api.chat.decode import TEXT_FIELDS, choices_of, index_of
from guardproxy.core.sse import DONE, SSEEvent, chunk_of, encode_event
from guardproxy.pipeline.masking import Masker
from guardproxy.redaction import StreamRedactor


def mask_completion(
    completion: dict[str, Any], masker: Masker, types: Collection[str]
) -> tuple[dict[str, Any], int]:
    choices, found = [], 0
    for choice in completion.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            choices.append(choice)
            continue
        masked, count = _mask_message(message, masker, types)
        choices.append({**choice, "message": masked})
        found += count
    return ({**completion, "choices": choices} if found else completion), found


def _mask_message(
    message: dict[str, Any], masker: Masker, types: Collection[str]
) -> tuple[dict[str, Any], int]:
    """Every text field of a message (see `chat.TEXT_FIELDS`) and its tool-call arguments."""
    masked, found = dict(message), 0
    for name in TEXT_FIELDS:
        masked[name], count = _mask_content(message.get(name), masker, types)
        found += count
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        masked["tool_calls"], count = _mask_calls(calls, masker, types)
        found += count
    if found and masked.get("logprobs") is not None:
        masked["logprobs"] = None  # token by token, it would spell out what was masked
    return (_without_added(masked, message) if found else message), found


def _without_added(masked: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in masked.items() if k in original}


def _mask_content(content: Any, masker: Masker, types: Collection[str]) -> tuple[Any, int]:
    if isinstance(content, str):
        return masker.mask(content, types)
    if not isinstance(content, list):
        return content, 0
    parts, found = [], 0
    for part in content:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            text, count = masker.mask(part["text"], types)
            parts.append({**part, "text": text} if count else part)
            found += count
        else:
            parts.append(part)
    return parts, found


def _mask_calls(calls: list[Any], masker: Masker, types: Collection[str]) -> tuple[list[Any], int]:
    masked, found = [], 0
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if not isinstance(arguments, str):
            masked.append(call)
            continue
        text, count = masker.mask(arguments, types)
        assert isinstance(function, dict)
        masked.append({**call, "function": {**function, "arguments": text}} if count else call)
        found += count
    return masked, found


TOOL_PREFIX = "tool:"


class EventMasker:
    """Masks redaction spans in streamed chat chunks, across chunk boundaries.

    Each text field of each choice (and each tool call's arguments) has its own stream
    redactor. Events whose text does not change keep their bytes. Held-back text is released
    with the choice's `finish_reason` chunk, or in a chunk of its own before `[DONE]` or at
    the end of the stream (`finish()`).
    """

    def __init__(self, masker: Masker, types: Collection[str]) -> None:
        self._masker = masker
        self._types = types
        self._redactors: dict[tuple[int, str], StreamRedactor] = {}
        self._template: dict[str, Any] = {"object": "chat.completion.chunk"}

    @classmethod
    def maybe(cls, masker: Masker, types: Collection[str]) -> EventMasker | None:
        return cls(masker, types) if types else None

    def rewrite(self, event: SSEEvent) -> bytes:
        if event.data is not None and event.data.strip() == DONE:
            return self.finish() + event.raw
        chunk = chunk_of(event)
        if chunk is None:
            return event.raw
        self._template = {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
        changed = [self._rewrite_choice(choice) for choice in choices_of(chunk)]
        return encode_event(chunk) if any(changed) else event.raw

    def finish(self) -> bytes:
        """A chunk with whatever is still held back (the stream ended without finishing)."""
        deltas: dict[int, dict[str, Any]] = {}
        for index in sorted({index for index, _ in self._redactors}):
            delta: dict[str, Any] = {}
            for name in TEXT_FIELDS:
                text = self._flush((index, name))
                if text:
                    delta[name] = text
            self._flush_calls(index, delta)
            if delta:
                deltas[index] = delta
        choices = [
            {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
            for i, delta in deltas.items()
        ]
        return encode_event({**self._template, "choices": choices}) if choices else b""

    def _rewrite_choice(self, choice: dict[str, Any]) -> bool:
        index, delta = index_of(choice), choice.get("delta")
        finishing = choice.get("finish_reason") is not None
        if not isinstance(delta, dict):
            if not finishing or not self._held(index):
                return False
            delta = choice["delta"] = {}
        changed = [self._text((index, n), delta, n, finishing) for n in TEXT_FIELDS]
        changed.append(self._calls(index, delta))
        if finishing:
            changed.append(self._flush_calls(index, delta))
        if any(changed) and choice.get("logprobs") is not None:
            choice["logprobs"] = None  # token by token, it would spell out what was masked
        return any(changed)

    def _text(
        self, key: tuple[int, str], holder: dict[str, Any], name: str, finishing: bool
    ) -> bool:
        """Mask `holder[name]` through the stream redactor for `key`; True if it changed."""
        value = holder.get(name)
        text = self._redactor(key).feed(value) if isinstance(value, str) else None
        if finishing:
            text = (text or "") + self._flush(key)
        if text == value or (value is None and not text):
            return False
        holder[name] = text
        return True

    def _calls(self, index: int, delta: dict[str, Any]) -> bool:
        """Tool-call arguments stream per call, so each call has its own redactor."""
        calls = delta.get("tool_calls")
        changed = False
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                key = (index, f"{TOOL_PREFIX}{call.get('index', 0)}")
                changed |= self._text(key, function, "arguments", False)
        return changed

    def _flush_calls(self, index: int, delta: dict[str, Any]) -> bool:
        keys = [k for k in self._redactors if k[0] == index and k[1].startswith(TOOL_PREFIX)]
        calls = []
        for key in keys:
            text = self._flush(key)
            if text:
                call_index = int(key[1].removeprefix(TOOL_PREFIX))
                calls.append({"index": call_index, "function": {"arguments": text}})
        if calls:
            delta["tool_calls"] = [*(delta.get("tool_calls") or []), *calls]
        return bool(calls)

    def _held(self, index: int) -> bool:
        return any(k[0] == index and r.held for k, r in self._redactors.items())

    def _redactor(self, key: tuple[int, str]) -> StreamRedactor:
        if key not in self._redactors:
            self._redactors[key] = StreamRedactor(self._masker.redactor, self._types)
        return self._redactors[key]

    def _flush(self, key: tuple[int, str]) -> str:
        redactor = self._redactors.pop(key, None)
        return redactor.flush() if redactor else ""
