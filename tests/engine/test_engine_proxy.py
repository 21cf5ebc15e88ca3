"""The proxy end to end against a real vLLM, through the official openai client: allow and
block on input and output, streamed and not, every Nemotron policy mode with the rendered
prompt checked against `guardproxy policy show`, reasoning, and the engine's errors relayed."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from guardproxy.core.verdict import Direction
from guardproxy.policy.view import show_guard_request
from tests.engine.conftest import MODEL, Engine, TierFactory, TierProxy

SAFE = "User Safety: safe\nResponse Safety: safe"
UNSAFE_INPUT = "User Safety: unsafe\nSafety Categories: Violence"
UNSAFE_OUTPUT = "User Safety: safe\nResponse Safety: unsafe\nSafety Categories: Violence"
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]
COMPETITOR = {"name": "Competitor Promotion", "description": "Recommending a rival bank."}


def test_a_safe_exchange_is_relayed_whole_and_streamed(start_tier: TierFactory) -> None:
    proxy = start_tier(SAFE)
    client = proxy.client()
    answer = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=8)
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content
    with client.chat.completions.create(
        model=MODEL, messages=HI, max_tokens=8, stream=True
    ) as stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert proxy.record()["output"]["status"] == "safe"


def test_an_unsafe_prompt_is_blocked_before_the_upstream(start_tier: TierFactory) -> None:
    proxy = start_tier(UNSAFE_INPUT)
    answer = proxy.client().chat.completions.create(model=MODEL, messages=HI, max_tokens=8)
    assert answer.choices[0].finish_reason == "content_filter"
    record = proxy.record()
    assert record["input"]["categories"] == ["Violence"]
    assert record["upstream_ms"] is None


@pytest.mark.parametrize("stream", [False, True])
def test_an_unsafe_answer_is_blocked(start_tier: TierFactory, stream: bool) -> None:
    proxy = start_tier(UNSAFE_OUTPUT)
    client = proxy.client()
    if stream:
        with client.chat.completions.create(
            model=MODEL, messages=HI, max_tokens=8, stream=True
        ) as events:
            reasons = [c.choices[0].finish_reason for c in events if c.choices]
        assert reasons[-1] == "content_filter"
    else:
        answer = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=8)
        assert answer.choices[0].finish_reason == "content_filter"
    assert proxy.record()["output"]["status"] == "unsafe"


def shown_bodies(proxy: TierProxy, direction: Direction) -> list[dict[str, Any]]:
    """The request bodies `guardproxy policy show` prints for the tenant, one per call."""
    tenant = proxy.policies.tenants["acme"]
    text = show_guard_request(proxy.settings, tenant, proxy.policies, None, direction)
    decoder = json.JSONDecoder()
    bodies = []
    for part in text.split("\n# call ")[1:]:
        body, _ = decoder.raw_decode(part[part.index("{") :])
        bodies.append(body)
    return bodies


def _kwargs(bodies: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(b["chat_template_kwargs"], sort_keys=True) for b in bodies)


@pytest.mark.parametrize(
    ("mode", "calls", "kwarg"),
    [("taxonomy", 1, "taxonomy"), ("policy", 1, "policy"), ("separate", 2, "policy")],
)
def test_each_policy_mode_renders_what_policy_show_prints(
    start_tier: TierFactory, engine: Engine, mode: str, calls: int, kwarg: str
) -> None:
    proxy = start_tier(
        "User Safety: unsafe",
        policy_mode=mode,
        policy="Never recommend a competitor.",
        custom_categories=[COMPETITOR],
        input={"default": "flag"},
        policy_action="flag",
        output={"enabled": False},
    )
    raw = proxy.client().chat.completions.with_raw_response.create(
        model=MODEL, messages=HI, max_tokens=4
    )
    assert raw.headers["x-guardproxy-action"] == "flag"
    sent, shown = proxy.relay.requests, shown_bodies(proxy, Direction.INPUT)
    assert len(sent) == len(shown) == calls
    assert _kwargs(sent) == _kwargs(shown)
    for body in sent:
        rendered = engine.render(body)
        kwargs = body["chat_template_kwargs"]
        for key, label in (("custom_taxonomy", "taxonomy"), ("custom_policy", "policy")):
            if key in kwargs:
                assert f"[{label}={kwargs[key]}]\n" in rendered
        assert rendered.endswith("<|user|>Hello there\n<|assistant|>")
        assert "<|system|>" not in rendered
    assert any(f"[{kwarg}=" in engine.render(body) for body in sent)
    assert proxy.record()["input"]["guard_calls"] == calls


def test_reasoning_gets_its_budget_and_its_trace_is_recorded(start_tier: TierFactory) -> None:
    trace = "<think>\n[a-z]{3,10}( [a-z]{3,10}){2,6}\n\n</think>"
    params = {"structured_outputs": {"regex": trace + "User Safety: safe\nResponse Safety: safe"}}
    proxy = start_tier("", guard={"params": params}, reasoning=True, output={"enabled": False})
    answer = proxy.client().chat.completions.create(model=MODEL, messages=HI, max_tokens=4)
    assert answer.choices[0].finish_reason != "content_filter"
    [sent] = proxy.relay.requests
    assert (sent["max_tokens"], sent["chat_template_kwargs"]["enable_thinking"]) == (1024, True)
    [recorded] = proxy.record()["input"]["reasoning"]
    assert " " in recorded


def test_the_engines_refusal_reaches_the_client_as_its_status_and_type(
    start_tier: TierFactory,
) -> None:
    """The upstream's error text is never relayed (it is unjudged, and may echo the prompt or
    name hosts); its status and identifiers are."""
    proxy = start_tier(SAFE)
    with pytest.raises(openai.BadRequestError) as caught:
        proxy.client().chat.completions.create(model=MODEL, messages=HI, max_tokens=100000)
    assert caught.value.status_code == 400
    assert caught.value.message.endswith("The upstream LLM refused the request (HTTP 400).")
    assert "max_model_len" not in caught.value.message
    assert caught.value.type == "BadRequestError"  # vLLM's own error type


def test_a_guard_the_engine_refuses_fails_closed(start_tier: TierFactory) -> None:
    proxy = start_tier("(unclosed", guard={"retries": 0})
    with pytest.raises(openai.InternalServerError) as caught:
        proxy.client().chat.completions.create(model=MODEL, messages=HI, max_tokens=4)
    assert caught.value.status_code == 503
    assert proxy.record()["input"]["status"] == "error"
