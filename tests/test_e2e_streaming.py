"""Streaming moderation on the real socket: what reaches the client, and when the upstream stops."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Proxy, ProxyFactory
from tests.fakes.guard import prompt_tokens

SAFE: ChatCompletionMessageParam = {"role": "user", "content": "Tell me a story."}
UNSAFE: ChatCompletionMessageParam = {"role": "user", "content": "How do I build a bomb?"}
WAIT_S = 10.0


def wait_for(condition: Callable[[], bool]) -> None:
    """Poll a condition that must become true; the bound only catches bugs."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@contextmanager
def post_stream(proxy: Proxy) -> Iterator[httpx.Response]:
    body = {"model": "m", "messages": [SAFE], "stream": True}
    headers = {"authorization": f"Bearer {proxy.key}"}
    url = f"{proxy.url}/v1/chat/completions"
    with httpx.Client() as http, http.stream("POST", url, json=body, headers=headers) as response:
        yield response


def contents(lines: list[str]) -> str:
    text = []
    for line in lines:
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


def story(n: int, middle: str = "") -> str:
    words = [f"word{i} " for i in range(n)]
    words.insert(n // 2, middle)
    return "".join(words)


def test_unsafe_phrase_mid_stream_never_reaches_the_client(proxy: Proxy) -> None:
    proxy.upstream.reply = story(60, "and then you steal a car quickly. ")
    with post_stream(proxy) as response:
        lines = list(response.iter_lines())
    received = contents(lines)
    assert "steal a car" not in received
    released = received.removesuffix("I'm sorry, but I can't help with that.")
    assert released.startswith("word0 ")  # the first window is released after its check
    assert proxy.upstream.reply.startswith(released)
    final = json.loads([line for line in lines if line.startswith("data: {")][-1][6:])
    assert final["choices"][0]["finish_reason"] == "content_filter"
    assert [line for line in lines if line][-1] == "data: [DONE]"


def test_cut_off_closes_the_upstream_stream(proxy: Proxy) -> None:
    proxy.upstream.reply = "Here is how to steal a car. " + story(400)
    proxy.upstream.token_interval_s = 0.005
    chunks = list(proxy.client().chat.completions.create(model="m", messages=[SAFE], stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    wait_for(lambda: proxy.upstream.open_streams == 0)
    assert proxy.upstream.streams_closed_early == 1
    assert proxy.upstream.streams_completed == 0


def test_text_is_released_while_the_upstream_is_still_generating(proxy: Proxy) -> None:
    proxy.upstream.reply = story(80)
    proxy.upstream.token_interval_s = 0.05  # 4 s of generation
    stream = proxy.client().chat.completions.create(model="m", messages=[SAFE], stream=True)
    first_text = next(c for c in stream if c.choices and c.choices[0].delta.content)
    assert first_text.choices[0].delta.content
    assert proxy.upstream.open_streams == 1
    assert proxy.upstream.streams_completed == 0
    rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert first_text.choices[0].delta.content + rest == proxy.upstream.reply


def test_error_block_shape_in_a_stream_is_an_error_event(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(on_block="error")
    proxy.upstream.reply = "Sure, to steal a car you " + story(20)
    with pytest.raises(openai.APIError) as caught:
        list(proxy.client().chat.completions.create(model="m", messages=[SAFE], stream=True))
    assert "blocked by the content policy" in caught.value.message


def test_parallel_input_never_leaks_upstream_bytes_before_an_unsafe_verdict(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(input={"mode": "parallel"})
    proxy.guard.delay_s = 0.3
    proxy.upstream.reply = "LEAKED " * 20
    chunks = list(proxy.client().chat.completions.create(model="m", messages=[UNSAFE], stream=True))
    received = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "LEAKED" not in received
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert len(proxy.upstream.requests) == 1  # started at once, in parallel with the check
    wait_for(lambda: proxy.upstream.open_streams == 0)


def test_client_disconnect_mid_stream_closes_the_upstream(proxy: Proxy) -> None:
    proxy.upstream.reply = story(400)
    proxy.upstream.token_interval_s = 0.02  # 8 s of generation
    with post_stream(proxy) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
    wait_for(lambda: proxy.upstream.open_streams == 0)
    assert proxy.upstream.streams_closed_early == 1
    wait_for(lambda: len(proxy.audit.records) == 1)


def test_client_disconnect_during_the_input_check_never_calls_the_upstream(proxy: Proxy) -> None:
    proxy.guard.delay_s = 1.0
    with httpx.Client(timeout=httpx.Timeout(5, read=0.2)) as http, pytest.raises(httpx.ReadTimeout):
        http.post(
            f"{proxy.url}/v1/chat/completions",
            json={"model": "m", "messages": [SAFE]},
            headers={"authorization": f"Bearer {proxy.key}"},
        )
    wait_for(lambda: len(proxy.audit.records) == 1)
    assert proxy.audit.records[0]["status"] == 499
    time.sleep(1.2)  # past the guard's delay: a leaked task would have called upstream by now
    assert proxy.upstream.requests == []


def test_buffer_mode_checks_the_whole_stream_before_sending(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(output={"stream": "buffer"})
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=[SAFE], stream=True
    )
    assert raw.headers["x-guardproxy-output"] == "safe"
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == proxy.upstream.reply


def test_a_stream_request_answered_without_sse_is_a_502(proxy: Proxy) -> None:
    proxy.upstream.ignore_stream = True
    with pytest.raises(openai.APIStatusError) as caught:
        list(proxy.client().chat.completions.create(model="m", messages=[SAFE], stream=True))
    assert caught.value.status_code == 502


def test_a_guard_failure_on_the_first_window_is_a_503_not_a_200(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(input={"enabled": False})
    proxy.upstream.reply = story(200)
    proxy.upstream.token_interval_s = 0.02  # still generating when the check fails
    proxy.guard.fail_status = 500
    proxy.guard.fail_times = 0
    client = proxy.client()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m", messages=[SAFE], stream=True)
    assert caught.value.status_code == 503
    wait_for(lambda: proxy.upstream.open_streams == 0)
    assert proxy.upstream.streams_closed_early == 1


def test_a_client_leaving_mid_stream_is_audited_as_499(proxy: Proxy) -> None:
    proxy.upstream.reply = story(400)
    proxy.upstream.token_interval_s = 0.02
    with post_stream(proxy) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
    wait_for(lambda: len(proxy.audit.records) == 1)
    assert proxy.audit.records[0]["status"] == 499


def test_a_chunked_stream_says_pending_in_its_headers_and_the_outcome_in_the_audit(
    proxy: Proxy,
) -> None:
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=[SAFE], stream=True
    )
    assert raw.headers["x-guardproxy-output"] == "pending"
    assert raw.headers["x-guardproxy-action"] == "pending"  # the answer is not judged yet
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == proxy.upstream.reply
    wait_for(lambda: len(proxy.audit.records) == 1)
    assert proxy.audit.records[0]["output"]["status"] == "safe"


def test_the_audit_counts_the_guards_own_prompt_tokens_over_the_answers_checks(
    proxy: Proxy,
) -> None:
    proxy.upstream.reply = story(100)
    with post_stream(proxy) as response:
        assert contents(list(response.iter_lines())) == proxy.upstream.reply
    wait_for(lambda: len(proxy.audit.records) == 1)
    moderation = proxy.audit.records[0]["moderation"]
    output_calls = [r.json for r in proxy.guard.requests if r.check.response is not None]
    assert len(output_calls) == moderation["checks"] > 1
    assert moderation["guard_tokens"] == sum(prompt_tokens(body) for body in output_calls)


def test_a_mid_stream_refusal_keeps_the_streams_id_and_ends_with_a_finish_chunk(
    proxy: Proxy,
) -> None:
    proxy.upstream.reply = story(60, "and then you steal a car quickly. ")
    with post_stream(proxy) as response:
        lines = list(response.iter_lines())
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert len({chunk["created"] for chunk in chunks}) == 1
    *_, refusal, finish = chunks
    assert refusal["choices"][0]["delta"] == {"content": "I'm sorry, but I can't help with that."}
    assert refusal["choices"][0]["finish_reason"] is None
    assert finish["choices"][0] == {
        "index": 0, "delta": {}, "logprobs": None, "finish_reason": "content_filter"
    }  # fmt: skip


def _call_deltas(arguments: list[str]) -> list[dict[str, Any]]:
    """A tool call streamed as OpenAI streams it: id and name first, then argument fragments."""
    first = {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "search", "arguments": ""}}  # fmt: skip
    rest = [{"index": 0, "function": {"arguments": part}} for part in arguments]
    return [{"tool_calls": [first]}, *({"tool_calls": [call]} for call in rest)]


def test_a_streamed_tool_call_is_judged_whole_and_released_intact(proxy: Proxy) -> None:
    proxy.upstream.deltas = _call_deltas(['{"q": "rose', "s in ", 'winter"}'])
    with proxy.client().chat.completions.create(model="m", messages=[SAFE], stream=True) as s:
        chunks = list(s)
    fragments = [
        call.function.arguments
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
        for call in c.choices[0].delta.tool_calls
        if call.function and call.function.arguments
    ]
    assert "".join(fragments) == '{"q": "roses in winter"}'
    judged = [r.check.response for r in proxy.guard.requests if r.check.response]
    assert any('search{"q": "roses in winter"}' in text for text in judged)


def test_an_unsafe_streamed_tool_call_is_never_half_sent(proxy: Proxy) -> None:
    proxy.upstream.deltas = [
        {"content": "Let me look that up. "},
        *_call_deltas(['{"q": "how to build', ' a bomb"}']),
    ]
    with post_stream(proxy) as response:
        lines = list(response.iter_lines())
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert not any(c["choices"] and c["choices"][0]["delta"].get("tool_calls") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert "Let me look that up." in contents(lines)
