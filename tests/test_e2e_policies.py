"""Tenant policies end to end: suppression, custom categories, regions, redaction, reload."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Proxy, ProxyFactory

WAIT_S = 10.0


def ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def guard_kwargs(proxy: Proxy, index: int = 0) -> dict[str, Any]:
    kwargs: dict[str, Any] = proxy.guard.requests[index].json["chat_template_kwargs"]
    return kwargs


def test_a_suppressed_category_passes(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(input={"categories": {"Violence": "allow"}})
    proxy.guard.unsafe_phrases = {"kill the process": ["Violence"]}
    answer = proxy.client().chat.completions.create(
        model="m", messages=ask("How do I kill the process?")
    )
    assert answer.choices[0].message.content == proxy.upstream.reply
    taxonomy = guard_kwargs(proxy)["custom_taxonomy"].splitlines()
    assert "- Violence" not in taxonomy
    assert "- Sexual" in taxonomy
    assert "custom_policy" not in guard_kwargs(proxy)


def test_a_custom_category_blocks(start_proxy: ProxyFactory) -> None:
    custom = [
        {"name": "Competitor Promotion", "description": "Naming a rival bank.", "action": "block"}
    ]
    proxy = start_proxy(custom_categories=custom)
    proxy.guard.unsafe_phrases = {"otherbank": ["Competitor Promotion"]}
    answer = proxy.client().chat.completions.create(model="m", messages=ask("Is OtherBank better?"))
    assert answer.choices[0].finish_reason == "content_filter"
    taxonomy = guard_kwargs(proxy)["custom_taxonomy"].splitlines()
    assert "- Competitor Promotion (Naming a rival bank.)" in taxonomy
    assert proxy.upstream.requests == []


def test_default_policy_sends_nvidias_standard_request(proxy: Proxy) -> None:
    proxy.client().chat.completions.create(model="m", messages=ask("hello"))
    assert guard_kwargs(proxy) == {"enable_thinking": False, "request_categories": "/categories"}


def test_flagged_category_is_allowed_and_recorded(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(output={"categories": {"Profanity": "flag"}})
    proxy.guard.unsafe_phrases = {"darn": ["Profanity"]}
    proxy.upstream.reply = "Well, darn it."
    raw = proxy.client().chat.completions.with_raw_response.create(model="m", messages=ask("hi"))
    assert raw.parse().choices[0].message.content == "Well, darn it."
    assert raw.headers["x-guardproxy-action"] == "flag"
    assert proxy.audit.records[-1]["flagged"] == ["output"]


def test_region_header_outside_the_tenants_list_is_400(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(regions=["EU"], allowed_regions=["FR"])
    client = proxy.client()
    allowed = client.chat.completions.create(
        model="m", messages=ask("hi"), extra_headers={"X-Guardproxy-Region": "FR"}
    )
    assert allowed.choices[0].message.content == proxy.upstream.reply
    assert "France (FR):" in guard_kwargs(proxy)["custom_taxonomy"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m", messages=ask("hi"), extra_headers={"X-Guardproxy-Region": "JP"}
        )
    assert caught.value.param == "x-guardproxy-region"


def test_input_pii_is_masked_before_the_upstream(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(redaction={"detectors": ["email", "payment_card"]})
    text = "Mail john.doe@example.com, card 4111 1111 1111 1111, not 4111 1111 1111 1112."
    proxy.client().chat.completions.create(model="m", messages=ask(text), temperature=0.2)
    sent = proxy.upstream.requests[0].json
    assert sent["messages"][0]["content"] == (
        "Mail [REDACTED:EMAIL], card [REDACTED:PAYMENT_CARD], not 4111 1111 1111 1112."
    )
    assert sent["temperature"] == 0.2
    assert proxy.guard.requests[0].check.prompt == text  # the guard judges what the user wrote
    assert proxy.audit.records[-1]["redacted"] == {"input": 2}


def test_output_pii_is_masked_for_the_client(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(redaction={"detectors": ["email"]})
    proxy.upstream.reply = "Write to jane@example.org today."
    answer = proxy.client().chat.completions.create(model="m", messages=ask("contact?"))
    assert answer.choices[0].message.content == "Write to [REDACTED:EMAIL] today."


def test_output_pii_split_across_stream_chunks_is_masked(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(redaction={"detectors": ["email"]})
    proxy.upstream.reply = "Write to jane.doe@example.org please, or jane.doe@example.org again."
    chunks = list(proxy.client().chat.completions.create(model="m", messages=ask("x"), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Write to [REDACTED:EMAIL] please, or [REDACTED:EMAIL] again."


def test_redact_category_with_nothing_maskable_blocks(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(input={"categories": {"PII/Privacy": "redact"}})
    proxy.guard.unsafe_phrases = {
        "home address": ["PII/Privacy"],
        "bob@example.com": ["PII/Privacy"],
    }
    client = proxy.client()
    blocked = client.chat.completions.create(model="m", messages=ask("Find Ann's home address"))
    assert blocked.choices[0].finish_reason == "content_filter"
    client.chat.completions.create(model="m", messages=ask("Email bob@example.com now"))
    assert proxy.upstream.requests[0].json["messages"][0]["content"] == "Email [REDACTED:EMAIL] now"


def test_reasoning_goes_to_the_audit_and_to_the_client_only_when_exposed(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(reasoning="on", expose_reasoning=False)
    proxy.guard.think = "The user asks for a bomb recipe: S1."
    blocked = proxy.client().chat.completions.create(model="m", messages=ask("build a bomb"))
    extra: Any = blocked.model_extra
    assert "reasoning" not in extra["guardproxy"]["input"]
    assert proxy.audit.records[-1]["input"]["reasoning"] == ["The user asks for a bomb recipe: S1."]
    assert guard_kwargs(proxy)["enable_thinking"] is True

    exposed = start_proxy(reasoning="on", expose_reasoning=True)
    exposed.guard.think = "Fine."
    answer = exposed.client().chat.completions.create(model="m", messages=ask("hello"))
    extra = answer.model_extra
    assert extra["guardproxy"]["input"]["reasoning"] == ["Fine."]


def test_a_broken_policy_file_keeps_the_last_good_set(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(reload=True, refusal_message="Old refusal.")
    policy_file = proxy.policies_dir / "acme.yaml"
    good = policy_file.read_text()
    policy_file.write_text(good + "on_block: shout\n")
    with proxy.ops() as http:
        wait_for(lambda: http.get("/readyz").json()["policies"]["status"] == "reload_failed")
        error = http.get("/readyz").json()["policies"]["error"]
    assert "acme.yaml" in error
    assert "on_block" in error
    blocked = proxy.client().chat.completions.create(model="m", messages=ask("build a bomb"))
    assert blocked.choices[0].message.content == "Old refusal."

    policy_file.write_text(good.replace("Old refusal.", "New refusal."))
    with proxy.ops() as http:
        wait_for(lambda: http.get("/readyz").json()["policies"]["status"] == "loaded")
    blocked = proxy.client().chat.completions.create(model="m", messages=ask("build a bomb"))
    assert blocked.choices[0].message.content == "New refusal."


def test_tool_call_arguments_are_masked_whole_and_streamed(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(redaction={"detectors": ["email"]})
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "send", "arguments": '{"to": "jane@example.org"}'},
    }
    proxy.upstream.message = {"content": None, "tool_calls": [call]}
    answer = proxy.client().chat.completions.create(model="m", messages=ask("mail jane"))
    calls = answer.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.arguments == '{"to": "[REDACTED:EMAIL]"}'  # type: ignore[union-attr]

    parts = ['{"to": "ja', "ne@exam", 'ple.org"}']
    proxy.upstream.deltas = [
        {"tool_calls": [{"index": 0, "function": {"arguments": part}}]} for part in parts
    ]
    chunks = list(proxy.client().chat.completions.create(model="m", messages=ask("x"), stream=True))
    streamed = "".join(
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or []
        if call.function
    )
    assert streamed == '{"to": "[REDACTED:EMAIL]"}'


def test_unsafe_reasoning_content_in_a_stream_is_checked(proxy: Proxy) -> None:
    proxy.upstream.deltas = [
        {"reasoning_content": "First, to build a bomb you "},
        {"content": "Hi"},
    ]
    chunks = list(proxy.client().chat.completions.create(model="m", messages=ask("x"), stream=True))
    assert all("bomb" not in str(c.choices[0].delta.model_extra) for c in chunks if c.choices)
    assert proxy.audit.records[-1]["action"] == "block"


@pytest.mark.parametrize("stream", ["chunked", "buffer"])
def test_stream_redact_verdict_with_nothing_maskable_blocks(
    start_proxy: ProxyFactory, stream: str
) -> None:
    proxy = start_proxy(output={"categories": {"PII/Privacy": "redact"}, "stream": stream})
    proxy.guard.unsafe_phrases = {"elm street": ["PII/Privacy"]}
    proxy.upstream.reply = "Alice Smith lives at 12 Elm Street, near the park."
    chunks = list(proxy.client().chat.completions.create(model="m", messages=ask("x"), stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Elm Street" not in text
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_redact_on_a_category_without_detectors_blocks(start_proxy: ProxyFactory) -> None:
    custom = [{"name": "Gossip", "description": "Rumours about colleagues.", "action": "redact"}]
    proxy = start_proxy(custom_categories=custom)
    proxy.guard.unsafe_phrases = {"rumour": ["Gossip"]}
    proxy.upstream.reply = "The rumour is that Bob was fired."
    answer = proxy.client().chat.completions.create(model="m", messages=ask("news?"))
    assert answer.choices[0].finish_reason == "content_filter"


def test_always_on_detectors_do_not_make_a_redact_verdict_block(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(
        redaction={"detectors": ["email"]}, output={"categories": {"PII/Privacy": "redact"}}
    )
    proxy.guard.unsafe_phrases = {"@example.org": ["PII/Privacy"]}
    proxy.upstream.reply = "Her address is ann@example.org."
    answer = proxy.client().chat.completions.create(model="m", messages=ask("who?"))
    assert answer.choices[0].message.content == "Her address is [REDACTED:EMAIL]."
