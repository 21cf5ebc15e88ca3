"""Server-sent events as OpenAI streams them, decoded without losing the bytes.

The proxy relays upstream events byte for byte, so the decoder hands back each event's raw
bytes together with its `data`. Line endings follow the SSE spec (CRLF, LF or CR).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from guardproxy.api.chat import said

LINE_END = re.compile(rb"\r\n|\r|\n")
DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    raw: bytes
    data: str | None  # None for events without a data field (comments, keep-alives)


class SSEDecoder:
    """Incremental decoder: feed it byte chunks, get back the events they complete."""

    def __init__(self) -> None:
        self._buffer = b""
        self._scan = 0
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        while (match := LINE_END.search(self._buffer, self._scan)) is not None:
            if match.group() == b"\r" and match.end() == len(self._buffer):
                break  # may be the first half of a CRLF split across chunks
            line = self._buffer[self._scan : match.start()]
            self._scan = match.end()
            if line:
                self._field(line)
            else:
                events.append(self._emit())
        return events

    def flush(self) -> list[SSEEvent]:
        """Whatever is left when the stream ends without a final blank line."""
        if self._buffer.strip():
            if self._scan < len(self._buffer):
                self._field(self._buffer[self._scan :].rstrip(b"\r\n"))
                self._scan = len(self._buffer)
            return [self._emit()]
        return []

    def _field(self, line: bytes) -> None:
        name, _, value = line.partition(b":")
        if name == b"data":
            self._data.append(value[1:] if value.startswith(b" ") else value)

    def _emit(self) -> SSEEvent:
        raw, self._buffer = self._buffer[: self._scan], self._buffer[self._scan :]
        self._scan = 0
        data = b"\n".join(self._data).decode("utf-8", "replace") if self._data else None
        self._data = []
        return SSEEvent(raw, data)


def encode_event(payload: dict[str, Any] | str, name: str | None = None) -> bytes:
    """One SSE event; `name` adds the `event:` line the Responses and Messages APIs send."""
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {data}\n\n".encode()


def encode_typed(payload: dict[str, Any]) -> bytes:
    """An event named by its payload's `type`, as the Responses and Messages APIs frame them."""
    return encode_event(payload, str(payload["type"]))


def chunk_of(event: SSEEvent) -> dict[str, Any] | None:
    """The JSON object an event carries, if it is one (not `[DONE]`, comments or garbage)."""
    if event.data is None or event.data.strip() == DONE:
        return None
    try:
        chunk = json.loads(event.data)
    except json.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


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
