"""Request validation and what the guards are shown."""

from __future__ import annotations

import json
from typing import Any

import pytest

from guardproxy.api.chat.codec import parse_chat_request
from guardproxy.api.chat.decode import choice_texts
from guardproxy.errors import RequestError


def request(**body: Any) -> bytes:
    return json.dumps({"model": "m", **body}).encode()


def test_last_user_turn_text_parts_and_images_are_extracted() -> None:
    content = [
        {"type": "text", "text": "first"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "second"},
    ]
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": content},
        {"role": "tool", "content": "tool output", "tool_call_id": "c1"},
    ]
    chat = parse_chat_request(request(messages=messages, stream=True))
    assert chat.prompt == "first\nsecond"
    assert chat.images == ("data:image/png;base64,AAAA",)
    assert chat.stream is True


def test_raw_bytes_are_kept_for_forwarding() -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"x"}],"zz":{"a":1}}'
    assert parse_chat_request(raw).raw is raw


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"[]", None),
        (b"\xff", None),
        (request(messages="hi"), "messages"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (request(messages=[{"role": "user", "content": "x"}], stream="yes"), "stream"),
        (request(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (
            request(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages[0].content[0].text",
        ),
        (
            request(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
            "messages[0].content[0].image_url",
        ),
    ],
)
def test_malformed_requests_name_the_field(raw: bytes, param: str | None) -> None:
    with pytest.raises(RequestError) as caught:
        parse_chat_request(raw)
    assert caught.value.param == param


def test_choice_texts_include_every_text_field() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
    reasoning = {"content": "a", "reasoning_content": "think ", "refusal": None}
    parts = {"role": "assistant", "content": [{"type": "text", "text": "p"}], "refusal": "no"}
    completion = {
        "choices": [
            {"index": 0, "message": reasoning},
            {"index": 1, "message": {"role": "assistant", "content": None, "tool_calls": [call]}},
            {"index": 2, "message": parts},
            {"index": 3, "message": {"audio": {"transcript": "spoken"}}},
            {"index": 4, "message": {"function_call": {"name": "g", "arguments": "{}"}}},
        ]
    }
    assert choice_texts(completion) == ["athink ", 'f{"x":1}', "pno", "spoken", "g{}"]
    assert choice_texts({"error": "x"}) == []
    assert choice_texts({"choices": [{"message": {"tool_calls": 1, "content": 5}}]}) == [""]
