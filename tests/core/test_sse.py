"""SSE decoding keeps every event's bytes; the text of a stream is assembled per choice."""

from __future__ import annotations

import json
from typing import Any

import pytest

from guardproxy.api.chat.decode import StreamText
from guardproxy.core.sse import SSEDecoder, encode_event

STREAM = (
    b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\r\n\r\n'
    b": keep-alive\n\n"
    b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    b'data: {"choices":[{"index":0,"delta":{"content":"lo"}}]}\r\r'
    b"data: [DONE]\n\n"
)


def decode_in_pieces(data: bytes, size: int) -> list[bytes]:
    decoder = SSEDecoder()
    events = [e for i in range(0, len(data), size) for e in decoder.feed(data[i : i + size])]
    return [e.raw for e in events + decoder.flush()]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_events_keep_their_exact_bytes_whatever_the_chunking(size: int) -> None:
    raw = decode_in_pieces(STREAM, size)
    assert b"".join(raw) == STREAM
    assert len(raw) == 5


def test_multiline_data_and_missing_final_blank_line() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"event: x\ndata: a\ndata:b\n\ndata: tail")
    events += decoder.flush()
    assert [e.data for e in events] == ["a\nb", "tail"]


def test_stream_text_joins_deltas_per_choice_and_tool_calls() -> None:
    text = StreamText()
    decoder = SSEDecoder()
    call = {"index": 0, "function": {"name": "get_weather", "arguments": '{"city":'}}
    chunks: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"content": "Hi "}}]},
        {"choices": [{"index": 1, "delta": {"content": "Yo"}}]},
        {"choices": [{"index": 0, "delta": {"content": "there", "tool_calls": [call]}}]},
        {"choices": [], "usage": {"total_tokens": 3}},
    ]
    for chunk in chunks:
        for event in decoder.feed(encode_event(chunk)):
            text.add(event)
    for event in decoder.feed(encode_event("[DONE]")):
        text.add(event)
    assert text.texts() == ['Hi thereget_weather{"city":', "Yo"]
    assert text.done


def test_non_json_and_error_events_add_no_text() -> None:
    text = StreamText()
    for event in SSEDecoder().feed(b"data: nonsense\n\n" + encode_event({"error": {"m": 1}})):
        text.add(event)
    assert text.texts() == []


def test_encode_event_is_openai_framing() -> None:
    assert encode_event({"a": "é"}) == 'data: {"a": "é"}\n\n'.encode()
    assert json.loads(encode_event({"a": 1})[6:]) == {"a": 1}
