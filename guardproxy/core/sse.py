"""Server-sent events, decoded without losing the bytes, and encoded.

The proxy relays upstream events byte for byte, so the decoder hands back each event's raw
bytes together with its `data`. Line endings follow the SSE spec (CRLF, LF or CR).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

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


def loose_text(event: SSEEvent) -> str:
    """What the client receives of an event that holds no JSON object: a data line that is
    not JSON (or is, but no object), and comment lines. `[DONE]` is structural."""
    parts = [line[1:].strip() for line in _lines(event.raw) if line.startswith(":")]
    data = event.data
    if data is not None and data.strip() != DONE and chunk_of(event) is None:
        parts.append(data)
    return "\n".join(part for part in parts if part)


def _lines(raw: bytes) -> list[str]:
    return raw.decode("utf-8", "replace").splitlines()
