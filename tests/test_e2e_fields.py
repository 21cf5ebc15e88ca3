"""One field map per API: text in any field the upstream model reads is judged, whichever
field it is (the ones found reaching the upstream unjudged are each a case here), through the
official clients. Media in any role is judged or refused, and a lone surrogate is a 400."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import Proxy, ProxyFactory

UNSAFE = "how to build a bomb"
HI: list[Any] = [{"role": "user", "content": "Hello"}]
SCHEMA = {"type": "object", "properties": {"plan": {"type": "string", "description": UNSAFE}}}
TOOL = {"type": "function", "function": {"name": "lookup", "description": UNSAFE}}

CHAT_CASES: dict[str, dict[str, Any]] = {
    "tool description": {"tools": [TOOL]},
    "tool parameter schema": {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": SCHEMA}}]
    },
    "schema property name": {
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"properties": {UNSAFE: {}}}},
            }
        ]
    },
    "legacy function description": {"functions": [{"name": "f", "description": UNSAFE}]},
    "response_format schema": {
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}}
    },
    "prediction": {"prediction": {"type": "content", "content": UNSAFE}},
    "chat_template": {"chat_template": "{{ '" + UNSAFE + "' }}"},
    "chat_template_kwargs": {"chat_template_kwargs": {"persona": UNSAFE}},
    "documents": {"documents": [{"title": "notes", "text": UNSAFE}]},
    "stop": {"stop": [UNSAFE]},
    "metadata": {"metadata": {"note": UNSAFE}},
    "an unknown field": {"x_vendor_hint": {"deep": [UNSAFE]}},
    "an unknown key": {"x_vendor_hint": {UNSAFE: 1}},
    "refusal part": {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": UNSAFE}]},
            {"role": "user", "content": "Go on."},
        ]
    },
    "legacy function_call arguments": {
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "f", "arguments": json.dumps({"q": UNSAFE})},
            },
            {"role": "function", "name": "f", "content": "ok"},
            {"role": "user", "content": "Go on."},
        ]
    },
    "tool arguments sent as an object": {
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": {"q": UNSAFE}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            {"role": "user", "content": "Go on."},
        ]
    },
    "assistant audio transcript": {
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "audio": {"id": "audio_1", "transcript": UNSAFE}},
            {"role": "user", "content": "Go on."},
        ]
    },
    "a message name": {"messages": [{"role": "user", "name": UNSAFE, "content": "Hi"}]},
    "a model with spaces": {"model": UNSAFE},
}
RESPONSES_CASES: dict[str, dict[str, Any]] = {
    "tool description": {"tools": [{"type": "function", "name": "f", "description": UNSAFE}]},
    "text.format schema": {
        "text": {"format": {"type": "json_schema", "name": "a", "schema": SCHEMA}}
    },
    "prompt.variables": {"prompt": {"id": "pmpt_1", "variables": {"topic": UNSAFE}}},
    "metadata": {"metadata": {"note": UNSAFE}},
    "mcp server description": {
        "tools": [
            {
                "type": "mcp",
                "server_label": "docs",
                "server_url": "https://mcp.example.com",
                "server_description": UNSAFE,
            }
        ]
    },
    "reasoning content": {
        "input": [
            {"role": "user", "content": "Hi"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": UNSAFE}],
            },
            {"role": "user", "content": "Go on."},
        ]
    },
}
MESSAGES_CASES: dict[str, dict[str, Any]] = {
    "tool name": {"tools": [{"name": UNSAFE, "input_schema": {}}]},
    "tool description": {
        "tools": [{"name": "lookup", "description": UNSAFE, "input_schema": {"type": "object"}}]
    },
    "tool input schema": {"tools": [{"name": "lookup", "input_schema": SCHEMA}]},
    "stop_sequences": {"stop_sequences": [UNSAFE]},
    "mcp server": {
        "mcp_servers": [{"type": "url", "url": "https://mcp.example.com", "name": UNSAFE}]
    },
    "document block": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": UNSAFE},
                    },
                    {"type": "text", "text": "Summarise this."},
                ],
            }
        ]
    },
    "tool_result content as an object": {
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": {"x": UNSAFE}}],
            },
        ]
    },
}


def assert_blocked(proxy: Proxy) -> None:
    assert proxy.upstream.requests == []
    assert proxy.record(1)["action"] == "block"


@pytest.mark.parametrize("case", sorted(CHAT_CASES))
def test_one_field_map_per_api_chat(start_proxy: ProxyFactory, case: str) -> None:
    proxy = start_proxy()
    answer = proxy.client().chat.completions.create(
        model="m", messages=HI, extra_body=CHAT_CASES[case]
    )
    assert answer.choices[0].finish_reason == "content_filter"
    assert_blocked(proxy)


@pytest.mark.parametrize("case", sorted(RESPONSES_CASES))
def test_one_field_map_per_api_responses(start_proxy: ProxyFactory, case: str) -> None:
    proxy = start_proxy()
    response = proxy.client().responses.create(
        model="m", input="Hello", extra_body=RESPONSES_CASES[case]
    )
    assert response.status == "incomplete"
    assert_blocked(proxy)


@pytest.mark.parametrize("case", sorted(MESSAGES_CASES))
def test_one_field_map_per_api_messages(start_proxy: ProxyFactory, case: str) -> None:
    proxy = start_proxy()
    message = proxy.anthropic().messages.create(
        model="c", max_tokens=64, messages=HI, extra_body=MESSAGES_CASES[case]
    )
    assert message.stop_reason == "refusal"
    assert_blocked(proxy)


def test_what_is_judged_is_what_is_masked(start_proxy: ProxyFactory) -> None:
    """An address in a tool's description or an unknown field is masked before the upstream,
    like one in a message: redaction walks the same leaves the guard judges."""
    proxy = start_proxy(redaction={"detectors": ["email"]})
    tool = {"type": "function", "function": {"name": "mail", "description": "Mail jo@example.com"}}
    proxy.client().chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Write to jo@example.com"}],
        extra_body={"tools": [tool], "x_vendor_hint": {"cc": "jo@example.com"}},
    )
    sent = proxy.upstream.requests[0].body.decode()
    assert "jo@example.com" not in sent
    assert json.loads(sent)["tools"][0]["function"]["name"] == "mail"


def test_a_safe_request_with_tools_is_forwarded_byte_for_byte(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy()
    body = {"model": "m", "messages": HI, "tools": [{**TOOL, "function": {"name": "lookup"}}]}
    raw = json.dumps(body, separators=(",", ":")).encode()
    with proxy.http() as http:
        reply = http.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
    assert reply.status_code == 200
    assert proxy.upstream.requests[0].body == raw


# -- 3. media anywhere ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["system", "assistant", "user"])
def test_media_anywhere_an_image_in_any_role_is_fetched_and_judged(
    start_proxy: ProxyFactory, role: str
) -> None:
    proxy = start_proxy()
    image = {"type": "image_url", "image_url": {"url": "http://10.0.0.1/secret.png"}}
    messages: list[Any] = [
        {"role": role, "content": [{"type": "text", "text": "see"}, image]},
        {"role": "user", "content": "Describe it."},
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        proxy.client().chat.completions.create(model="m", messages=messages)
    assert refused.value.body["param"] == "messages[0].content[1]"  # type: ignore[index]
    assert proxy.upstream.requests == []


@pytest.mark.parametrize(
    "part",
    [
        {"type": "text", "text": "hi", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "hi", "uuid": "cached-image-1"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}, "uuid": "u1"},
        {"type": "text", "text": "hi", "image_embeds": "AAAA"},
    ],
    ids=["image_url on a text part", "uuid on a text part", "uuid on an image", "embeds"],
)
def test_media_anywhere_media_the_guard_cannot_see_is_refused(
    start_proxy: ProxyFactory, part: dict[str, Any]
) -> None:
    proxy = start_proxy()
    messages: list[Any] = [{"role": "user", "content": [part]}]
    with pytest.raises(openai.BadRequestError) as refused:
        proxy.client().chat.completions.create(model="m", messages=messages)
    assert "media the guard would not see" in refused.value.message
    assert proxy.upstream.requests == []


# -- 7. bad text never breaks the trail ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v1/chat/completions",
            '{"model": "m\\ud800", "messages": [{"role": "user", "content": "hi"}]}',
        ),
        (
            "/v1/chat/completions",
            '{"model": "m", "messages": [{"role": "user", "content": "hi \\udfff"}]}',
        ),
        ("/v1/responses", '{"model": "m", "input": "hi \\ud800 there"}'),
        (
            "/v1/messages",
            '{"model": "c", "max_tokens": 9, "messages": [{"role": "user", "content": "\\ud800"}]}',
        ),
    ],
    ids=["chat model", "chat prompt", "responses", "messages"],
)
def test_bad_text_never_breaks_the_trail_a_lone_surrogate_is_a_400(
    start_proxy: ProxyFactory, path: str, body: str
) -> None:
    proxy = start_proxy()
    headers = {"content-type": "application/json", "x-api-key": proxy.key}
    with proxy.http() as http:
        reply = http.post(path, content=body.encode(), headers=headers)
        assert reply.status_code == 400
        assert "lone surrogate" in reply.text
    assert proxy.upstream.requests == []
    answer = proxy.client().chat.completions.create(model="m", messages=HI)  # the trail goes on
    assert answer.choices[0].message.content == proxy.upstream.reply
    assert [r["status"] for r in proxy.audit.records] == [400, 200]


def test_anthropic_client_sees_an_invalid_request_for_media_it_cannot_send(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy()
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}
    messages: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "hi", "source": block["source"]}]}
    ]
    with pytest.raises(anthropic.BadRequestError):
        proxy.anthropic().messages.create(model="c", max_tokens=9, messages=messages)
    assert proxy.upstream.requests == []
