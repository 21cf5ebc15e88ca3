"""A request costs a bounded number of guard calls, and no text is too long to be judged:
long conversations are judged in windows, long texts in overlapping segments, and a request
past `input.max_guard_calls` is refused with a 400 in its API's shape. Through the official
clients against the running proxy; the fake guard refuses what exceeds its context, as vLLM."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Proxy, ProxyFactory

UNSAFE = "how to build a bomb"
# Room for the default 16000-character window (~4000 tokens) and the guard's max_tokens.
GUARD_CONTEXT_TOKENS = 4400


def conversation(turns: int, unsafe_at: int | None = None) -> list[Any]:
    """`turns` chat messages (user and assistant in turn, ~55 characters each) and a last
    user turn; the message at `unsafe_at` asks for something unsafe."""
    messages: list[Any] = []
    for number in range(turns):
        role = "assistant" if number % 2 else "user"
        text = f"Message {number:04d}: a few words about watering roses."
        if number == unsafe_at:
            text = f"Message {number:04d}: {UNSAFE}, step by step."
        messages.append({"role": role, "content": text})
    return [*messages, {"role": "user", "content": "And tulips?"}]


def blocked(proxy: Proxy, messages: list[Any]) -> bool:
    answer = proxy.client().chat.completions.create(model="m", messages=messages)
    return answer.choices[0].finish_reason == "content_filter"


def every_guard_call_fit(proxy: Proxy) -> bool:
    """Every guard request was within the fake guard's context: none was answered 400."""
    limit = GUARD_CONTEXT_TOKENS * 4
    lengths = [sum(len(m["content"]) for m in r.json["messages"]) for r in proxy.guard.requests]
    return bool(lengths) and max(lengths) <= limit


@pytest.fixture
def bounded(start_proxy: ProxyFactory) -> Proxy:
    proxy = start_proxy(output={"enabled": False})
    proxy.guard.max_model_len = GUARD_CONTEXT_TOKENS
    return proxy


@pytest.mark.parametrize("unsafe_at", [500, 501], ids=["user-turn", "assistant-turn"])
def test_a_thousand_turn_request_takes_at_most_max_guard_calls_and_blocks_a_buried_turn(
    bounded: Proxy, unsafe_at: int
) -> None:
    messages = conversation(1000, unsafe_at)
    assert len(str(messages)) > 55_000
    assert blocked(bounded, messages)
    assert len(bounded.guard.requests) <= 64  # input.max_guard_calls, by default
    assert every_guard_call_fit(bounded)
    assert bounded.upstream.requests == []
    parts = bounded.audit.records[-1]["input"]["parts"]
    [unsafe] = [p for p in parts if p["status"] == "unsafe"]
    assert " .. " in unsafe["part"]  # the window that holds it, e.g. "messages[1] .. messages[…]"


def test_a_growing_conversation_reuses_the_verdicts_of_its_earlier_windows(
    bounded: Proxy,
) -> None:
    client = bounded.client()
    client.chat.completions.create(model="m", messages=conversation(1000))
    first = len(bounded.guard.requests)
    longer = [*conversation(1000), {"role": "assistant", "content": "Tulips like sun."}]
    client.chat.completions.create(model="m", messages=[*longer, {"role": "user", "content": "?"}])
    assert len(bounded.guard.requests) - first <= 3  # the open windows and the new last turn
    assert bounded.audit.records[-1]["input"]["cached"] >= 3


def test_a_short_conversation_is_still_judged_turn_by_turn(bounded: Proxy) -> None:
    assert blocked(bounded, conversation(10, unsafe_at=3))
    parts = bounded.audit.records[-1]["input"]["parts"]
    assert [p["part"] for p in parts if p["status"] == "unsafe"] == ["messages[3] (assistant)"]


LONG_TURNS = [{"role": "user", "content": f"Paragraph {n}: " + "words " * 300} for n in range(9)]


def over_the_cap(proxy: Proxy, api: str) -> tuple[int, Any]:
    """Nine 1,800-character turns: nine windows of 1024 characters, past a cap of 4."""
    messages: list[Any] = []
    for turn in LONG_TURNS:
        messages += [turn, {"role": "assistant", "content": "Noted."}]
    messages.append({"role": "user", "content": "Summarise."})
    try:
        if api == "chat":
            proxy.client().chat.completions.create(model="m", messages=messages)
        elif api == "responses":
            proxy.client().responses.create(model="m", input=messages)
        else:
            proxy.anthropic().messages.create(model="m", max_tokens=9, messages=messages)
    except (openai.BadRequestError, anthropic.BadRequestError) as exc:
        return exc.status_code, exc.response.json()
    raise AssertionError("the request was served")


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
def test_a_request_past_max_guard_calls_is_refused_in_its_apis_shape(
    start_proxy: ProxyFactory, api: str
) -> None:
    proxy = start_proxy(input={"max_guard_calls": 4, "window_chars": 1024})
    status, body = over_the_cap(proxy, api)
    assert status == 400
    error = body["error"]
    assert body.get("type") == ("error" if api == "messages" else None)
    assert error["type"] == "invalid_request_error"
    assert "more than the 4 allowed per request" in error["message"]
    if api != "messages":
        assert error["param"] == ("input" if api == "responses" else "messages")
    assert proxy.guard.requests == []
    assert proxy.upstream.requests == []
    assert proxy.audit.records[-1]["action"] == "reject"


def test_past_the_cap_even_a_parallel_tenant_sends_nothing_upstream(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(input={"max_guard_calls": 4, "window_chars": 1024, "mode": "parallel"})
    assert over_the_cap(proxy, "chat")[0] == 400
    assert proxy.upstream.requests == []


def hundred_kb(ending: str) -> str:
    return "A long, harmless report about gardens. " * 2600 + ending


def test_a_hundred_kb_prompt_with_an_unsafe_phrase_near_the_end_is_blocked(
    bounded: Proxy,
) -> None:
    prompt = hundred_kb(f"Now tell me {UNSAFE}.")
    assert len(prompt) > 100_000
    assert blocked(bounded, [{"role": "user", "content": prompt}])
    assert every_guard_call_fit(bounded)
    assert 7 <= len(bounded.guard.requests) <= 10  # overlapping segments of 16000 characters
    assert bounded.upstream.requests == []


def test_the_fake_guard_refuses_a_prompt_longer_than_its_context_as_vllm_does(
    bounded: Proxy,
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": hundred_kb("")}]}
    answer = httpx.post(f"{bounded.guard_url}/chat/completions", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "BadRequestError"
    assert error["message"].startswith("This model's maximum context length is 4400 tokens.")


def allowing(start_proxy: ProxyFactory, **tenant: Any) -> Proxy:
    """A tenant with `on_guard_error: allow`, in front of a guard with a bounded context."""
    proxy = start_proxy(on_guard_error="allow", **tenant)
    proxy.guard.max_model_len = GUARD_CONTEXT_TOKENS
    return proxy


@pytest.mark.parametrize("ending", ["Thanks.", f"Also, {UNSAFE}."], ids=["safe", "unsafe"])
def test_an_overlong_prompt_never_passes_unjudged_on_an_allow_tenant(
    start_proxy: ProxyFactory, ending: str
) -> None:
    """Sent whole, the prompt would be a guard 400, and `on_guard_error: allow` would forward
    it without a verdict. In segments, every part gets one."""
    proxy = allowing(start_proxy, output={"enabled": False})
    was_blocked = blocked(proxy, [{"role": "user", "content": hundred_kb(ending)}])
    record = proxy.audit.records[-1]["input"]
    assert record["status"] == ("unsafe" if was_blocked else "safe")
    assert was_blocked == (UNSAFE in ending)
    assert every_guard_call_fit(proxy)


def test_a_long_answer_is_judged_in_segments_and_with_a_long_prompt(
    start_proxy: ProxyFactory,
) -> None:
    proxy = allowing(start_proxy, input={"enabled": False})
    proxy.upstream.reply = hundred_kb(f"Here is {UNSAFE}.")
    assert blocked(proxy, [{"role": "user", "content": "Write a report."}])
    assert proxy.audit.records[-1]["output"]["status"] == "unsafe"
    proxy.upstream.reply = f"Sure: {UNSAFE}."
    assert blocked(proxy, [{"role": "user", "content": hundred_kb("Summarise this.")}])
    assert proxy.audit.records[-1]["output"]["status"] == "unsafe"
    assert every_guard_call_fit(proxy)


def test_a_long_streamed_answer_is_judged_in_segments_by_its_final_check(
    start_proxy: ProxyFactory,
) -> None:
    proxy = allowing(start_proxy, input={"enabled": False})
    proxy.upstream.reply = hundred_kb("The end.")
    stream = proxy.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": hundred_kb("Go on.")}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == proxy.upstream.reply
    assert proxy.record(1)["output"]["status"] == "safe"
    assert every_guard_call_fit(proxy)
