"""What the client receives beyond an answer's text is judged too: hosted-tool outputs, thinking
in a block's start, logprobs tokens, mid-stream errors and stray SSE lines, each choice of a
streamed `n` > 1; and an upstream's error text is never relayed. Through the official clients,
against an upstream that answers with exactly the bytes each test sets."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Proxy

UNSAFE = "how to build a bomb"
ASK: Any = [{"role": "user", "content": "Tell me about roses."}]


def sse(*payloads: dict[str, Any] | str, named: bool = False) -> list[bytes]:
    events = []
    for payload in payloads:
        if isinstance(payload, str):
            events.append(payload.encode())
            continue
        head = f"event: {payload['type']}\n" if named else ""
        events.append(f"{head}data: {json.dumps(payload)}\n\n".encode())
    return events


def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": choices}  # fmt: skip


def delta(index: int, text: str) -> dict[str, Any]:
    return {"index": index, "delta": {"content": text}, "finish_reason": None}


def completion(message: dict[str, Any], **choice: Any) -> bytes:
    first = {"index": 0, "message": message, "finish_reason": "stop", **choice}
    answer = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [first]}  # fmt: skip
    return json.dumps(answer).encode()


def stream_text(proxy: Proxy, **extra: Any) -> tuple[str, str | None]:
    stream: Any = proxy.client().chat.completions.create(
        model="m", messages=ASK, stream=True, **extra
    )
    text, finish = "", None
    for part in stream:
        for choice in part.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish


@pytest.mark.parametrize("n", [2, "2", 2.0], ids=["int", "string", "float"])
def test_a_streamed_answer_with_several_choices_judges_each_on_its_own(
    proxy: Proxy, n: Any
) -> None:
    """Interleaved, the unsafe choice's words never meet; read choice by choice, they do."""
    words = [("Roses", "how to"), (" are", " build a"), (" red.", " bomb.")]
    events = [chunk([delta(0, safe), delta(1, unsafe)]) for safe, unsafe in words]
    proxy.upstream.raw_reply = (200, "text/event-stream", sse(*events, "data: [DONE]\n\n"))
    text, finish = stream_text(proxy, extra_body={"n": n})
    assert finish == "content_filter"
    assert UNSAFE not in text
    assert proxy.record(1)["output"]["status"] == "unsafe"


def test_logprobs_tokens_are_judged(proxy: Proxy) -> None:
    top = [{"token": UNSAFE, "logprob": -9.0, "bytes": None}]
    logprobs = {"content": [{"token": "Roses", "logprob": -0.1, "bytes": None,
                             "top_logprobs": top}], "refusal": None}  # fmt: skip
    proxy.upstream.raw_reply = (
        200, "application/json", completion({"role": "assistant", "content": "Roses"},
                                            logprobs=logprobs),
    )  # fmt: skip
    answer = proxy.client().chat.completions.create(model="m", messages=ASK, logprobs=True)
    assert answer.choices[0].finish_reason == "content_filter"
    assert UNSAFE not in answer.model_dump_json()


def test_a_stray_sse_line_and_a_mid_stream_error_are_judged(proxy: Proxy) -> None:
    for stray in (f"data: {UNSAFE}, not JSON\n\n",
                  f'data: {{"error": {{"message": "{UNSAFE}", "type": "server_error"}}}}\n\n',
                  f": {UNSAFE}, in a comment\n\n"):  # fmt: skip
        events = sse(chunk([delta(0, "Roses are red. ")]), stray, "data: [DONE]\n\n")
        proxy.upstream.raw_reply = (200, "text/event-stream", events)
        with httpx.Client(base_url=proxy.url, timeout=30) as http:
            reply = http.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": ASK, "stream": True},
                headers={"authorization": f"Bearer {proxy.key}"},
            )
        assert UNSAFE not in reply.text
        assert "content_filter" in reply.text


def test_a_hosted_tool_output_in_a_responses_answer_is_judged(proxy: Proxy) -> None:
    call = {"type": "mcp_call", "id": "mcp_1", "server_label": "wiki", "name": "lookup",
            "arguments": "{}", "output": f"Here is {UNSAFE}.", "status": "completed"}  # fmt: skip
    text = {"type": "output_text", "text": "Done.", "annotations": []}
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [text]}  # fmt: skip
    answer = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m",
              "status": "completed", "output": [call, message], "tools": [],
              "parallel_tool_calls": True, "tool_choice": "auto"}  # fmt: skip
    proxy.upstream.raw_reply = (200, "application/json", json.dumps(answer).encode())
    response = proxy.client().responses.create(model="m", input="Look up roses.")
    assert UNSAFE not in response.model_dump_json()
    assert proxy.audit.records[-1]["output"]["status"] == "unsafe"


def test_thinking_in_a_content_block_start_is_judged(proxy: Proxy) -> None:
    """litellm's Anthropic streams put the thinking text in `content_block_start` itself."""
    start = {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 1, "output_tokens": 0}}}  # fmt: skip
    block = {"type": "content_block_start", "index": 0,
             "content_block": {"type": "thinking", "thinking": f"I'll explain {UNSAFE}.",
                               "signature": ""}}  # fmt: skip
    end: list[dict[str, Any]] = [{"type": "content_block_stop", "index": 0},
           {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9}},
           {"type": "message_stop"}]  # fmt: skip
    proxy.upstream.raw_reply = (200, "text/event-stream", sse(start, block, *end, named=True))
    with proxy.anthropic().messages.stream(model="m", max_tokens=64, messages=ASK) as stream:
        events = list(stream)
    thinking = [e for e in events if e.type == "content_block_start"]
    assert all(UNSAFE not in e.model_dump_json() for e in thinking)
    assert proxy.record(1)["output"]["status"] == "unsafe"


@pytest.mark.parametrize("status", [400, 500])
def test_an_upstream_error_keeps_its_status_and_identifiers_never_its_text(
    proxy: Proxy, status: int
) -> None:
    error = {"error": {"message": f"{UNSAFE} at 10.0.0.7:8000, account 4411",
                       "type": "invalid_request_error", "param": "messages",
                       "code": "context_length_exceeded"}}  # fmt: skip
    proxy.upstream.raw_reply = (status, "application/json", json.dumps(error).encode())
    with pytest.raises(openai.APIStatusError) as caught:
        proxy.client().chat.completions.create(model="m", messages=ASK)
    assert caught.value.status_code == status
    body = caught.value.response.text
    assert all(secret not in body for secret in ("10.0.0.7", UNSAFE, "4411"))
    assert caught.value.code == "context_length_exceeded"
    assert proxy.audit.records[-1]["action"] == "error"


def test_an_upstream_error_on_messages_is_in_anthropics_shape(proxy: Proxy) -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "node-7 full"}}
    proxy.upstream.raw_reply = (529, "application/json", json.dumps(error).encode())
    with pytest.raises(anthropic.APIStatusError) as caught:
        proxy.anthropic().messages.create(model="m", max_tokens=64, messages=ASK)
    assert caught.value.status_code == 529
    assert "node-7" not in caught.value.response.text


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/responses", {"model": "m", "input": "Hi", "tools": [{"type": "web_search"}]},
         "tools[0]"),
        ("/v1/messages", {"model": "m", "max_tokens": 9, "messages": ASK,
                          "mcp_servers": [{"type": "url", "url": "https://mcp.example",
                                           "name": "wiki"}]}, "mcp_servers"),
        ("/v1/chat/completions", {"model": "m", "messages": ASK, "web_search_options": {}},
         None),
    ],
    ids=["responses-web-search", "messages-mcp-servers", "chat-empty-options"],
)  # fmt: skip
def test_a_tenant_can_refuse_tools_the_provider_runs(
    start_proxy: Any, path: str, body: dict[str, Any], param: str | None
) -> None:
    proxy = start_proxy(input={"hosted_tools": "refuse"})
    headers = {"authorization": f"Bearer {proxy.key}", "x-api-key": proxy.key}
    with httpx.Client(base_url=proxy.url, headers=headers, timeout=30) as http:
        reply = http.post(path, json=body)
    if param is None:  # an empty `web_search_options` switches nothing on
        assert reply.status_code == 200
        return
    assert reply.status_code == 400
    assert param in reply.text
    assert proxy.upstream.requests == []


def test_redaction_masks_a_hosted_tool_output_as_it_masks_text(start_proxy: Any) -> None:
    proxy = start_proxy(redaction={"detectors": ["email"]})
    call = {"type": "web_search_call", "id": "ws_1", "status": "completed",
            "action": {"type": "search", "query": "write to jane.doe@example.com"}}  # fmt: skip
    answer = {"id": "resp_1", "object": "response", "created_at": 1, "model": "m",
              "status": "completed", "output": [call], "tools": [],
              "parallel_tool_calls": True, "tool_choice": "auto"}  # fmt: skip
    proxy.upstream.raw_reply = (200, "application/json", json.dumps(answer).encode())
    response = proxy.client().responses.create(model="m", input="Search.")
    assert "jane.doe@example.com" not in response.model_dump_json()
    assert "write to " in response.output[0].model_dump_json()


def test_a_plain_stream_is_judged_once_on_every_api(proxy: Proxy) -> None:
    """Summaries that repeat the deltas (`.done`, `response.completed`, `message_start`) and
    the request's own `instructions` echoed back add nothing to what the guard reads."""
    reply = proxy.upstream.reply
    chat: Any = proxy.client().chat.completions.create(model="m", messages=ASK, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices) == reply
    with proxy.client().responses.stream(
        model="m", input="Tell me about roses.", instructions="Answer in one line."
    ) as stream:
        assert stream.get_final_response().output_text == reply
    with proxy.anthropic().messages.stream(model="m", max_tokens=64, messages=ASK) as told:
        assert told.get_final_text() == reply
    for number in (1, 2, 3):
        moderation = proxy.record(number)["moderation"]
        assert moderation["answer_chars"] == len(reply), number
