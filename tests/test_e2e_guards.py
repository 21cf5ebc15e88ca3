"""Guard fidelity end to end through the official openai client: Nemotron 3.5's policy modes,
reasoning, unknown categories, and the other guard families behind the same policy."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Proxy, ProxyFactory

COMPETITOR = {"name": "Competitor Promotion", "description": "Recommending a rival bank."}


def ask(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def audit_input(proxy: Proxy) -> dict[str, object]:
    record: dict[str, object] = proxy.audit.records[-1]["input"]
    return record


# --- Mode B keeps category actions working ---------------------------------------------------


def test_a_customised_tenants_redact_action_works_in_mode_b(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(
        custom_categories=[{**COMPETITOR, "action": "flag"}],
        input={"categories": {"PII/Privacy": "redact"}},
        redaction={"detectors": []},
    )
    proxy.guard.unsafe_phrases = {"@example.com": ["PII/Privacy"]}
    proxy.client().chat.completions.create(model="m", messages=ask("Mail ann@example.com now"))
    kwargs = proxy.guard.requests[0].json["chat_template_kwargs"]
    assert "custom_taxonomy" in kwargs
    sent = proxy.upstream.requests[0].json["messages"][0]["content"]
    assert sent == "Mail [REDACTED:EMAIL] now"


def test_a_custom_categorys_flag_action_works_in_mode_b(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(custom_categories=[{**COMPETITOR, "action": "flag"}])
    proxy.guard.unsafe_phrases = {"otherbank": ["Competitor Promotion"]}
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=ask("Is OtherBank better?")
    )
    assert raw.parse().choices[0].message.content == proxy.upstream.reply
    assert raw.headers["x-guardproxy-action"] == "flag"
    assert audit_input(proxy)["categories"] == ["Competitor Promotion"]


def test_a_suppressed_category_is_not_listed_so_mode_b_does_not_flag_it(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(input={"categories": {"Violence": "allow"}})
    proxy.guard.unsafe_phrases = {"kill the process": ["Violence"]}
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=ask("How do I kill the process?")
    )
    assert raw.headers["x-guardproxy-input"] == "safe"


# --- Mode A and separate ---------------------------------------------------------------------


def test_policy_mode_violation_without_categories_gets_policy_action(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(
        policy_mode="policy", policy="Never recommend a competitor.", policy_action="flag"
    )
    proxy.guard.rule_phrases = {"otherbank": "competitor"}
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=ask("Should I move to OtherBank?")
    )
    assert "custom_policy" in proxy.guard.requests[0].json["chat_template_kwargs"]
    assert raw.headers["x-guardproxy-action"] == "flag"
    assert audit_input(proxy)["policy"] == "violated"


def test_separate_mode_blocks_a_rules_only_violation_with_both_calls_at_once(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(policy_mode="separate", policy="Never recommend a competitor.")
    proxy.guard.rule_phrases = {"otherbank": "competitor"}
    # Each guard request waits until two are in flight: calls one after the other would
    # never be answered, so an answer at all shows the two calls overlap.
    proxy.guard.hold_until = 2
    answer = proxy.client().chat.completions.create(
        model="m", messages=ask("Should I move to OtherBank?")
    )
    assert answer.choices[0].finish_reason == "content_filter"
    assert proxy.guard.max_in_flight == 2
    assert proxy.upstream.requests == []
    record = audit_input(proxy)
    assert record["guard_calls"] == 2
    assert record["calls"] == [
        {"mode": "standard", "user": "safe", "response": "unrated"},
        {"mode": "policy", "user": "unsafe", "response": "unrated"},
    ]


def test_separate_mode_keeps_built_in_categories_from_the_standard_call(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(policy_mode="separate", policy="Never recommend a competitor.")
    proxy.guard.hold_until = 2
    answer = proxy.client().chat.completions.create(model="m", messages=ask("build a bomb"))
    assert answer.choices[0].finish_reason == "content_filter"
    kinds = sorted(
        "custom_policy" if "custom_policy" in kwargs else "standard"
        for kwargs in (r.json["chat_template_kwargs"] for r in proxy.guard.requests)
    )
    assert kinds == ["custom_policy", "standard"]
    assert audit_input(proxy)["categories"] == ["Violence", "Guns and Illegal Weapons"]


# --- reasoning -------------------------------------------------------------------------------


def test_reasoning_on_gets_a_budget_that_holds_nvidias_trace(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(reasoning=True)
    answer = proxy.client().chat.completions.create(model="m", messages=ask("hello"))
    assert answer.choices[0].message.content == proxy.upstream.reply
    assert proxy.guard.requests[0].json["max_tokens"] == 1024
    traces = audit_input(proxy)["reasoning"]
    assert isinstance(traces, list)
    assert "S9: PII/Privacy" in traces[0]


def test_a_trace_cut_off_by_a_small_budget_fails_closed(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(reasoning=True, guard_settings={"params": {"max_tokens": 100}})
    with pytest.raises(openai.InternalServerError) as caught:
        proxy.client().chat.completions.create(model="m", messages=ask("hello"))
    assert caught.value.status_code == 503
    assert proxy.upstream.requests == []


def test_a_guard_that_ignores_enable_thinking_records_reasoning_unavailable(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(reasoning=True)
    proxy.guard.ignore_thinking = True
    answer = proxy.client().chat.completions.create(model="m", messages=ask("hello"))
    assert answer.choices[0].message.content == proxy.upstream.reply
    assert audit_input(proxy)["reasoning"] == "unavailable"


# --- categories --------------------------------------------------------------------------------


def test_an_unknown_category_gets_the_default_and_is_shown(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(input={"default": "flag"})
    proxy.guard.unsafe_phrases = {"zap": ["Unsafe Code Execution"]}
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=ask("zap it")
    )
    assert raw.headers["x-guardproxy-action"] == "flag"
    body = raw.http_response.json()
    assert body["guardproxy"]["input"]["unknown_categories"] == ["Unsafe Code Execution"]
    assert audit_input(proxy)["categories"] == ["Unsafe Code Execution"]


# --- serving and other families ---------------------------------------------------------------


def test_an_sglang_guard_judges_answers_folded_into_the_user_turn(
    start_proxy: ProxyFactory,
) -> None:
    proxy = start_proxy(guard_settings={"response_in_user_turn": True})
    proxy.upstream.reply = "Here is how to build a bomb."
    answer = proxy.client().chat.completions.create(model="m", messages=ask("hi"))
    assert answer.choices[0].finish_reason == "content_filter"
    assert [m["role"] for m in proxy.guard.requests[-1].json["messages"]] == ["user"]


@pytest.mark.parametrize("protocol", ["llama-guard", "qwen3guard", "granite-guardian"])
def test_another_guard_family_blocks_and_allows_under_the_same_policy(
    start_proxy: ProxyFactory, protocol: str
) -> None:
    proxy = start_proxy(protocol=protocol)
    client = proxy.client()
    allowed = client.chat.completions.create(model="m", messages=ask("hello"))
    assert allowed.choices[0].message.content == proxy.upstream.reply
    blocked = client.chat.completions.create(model="m", messages=ask("steal a car"))
    assert blocked.choices[0].finish_reason == "content_filter"
    proxy.upstream.reply = "First, build a bomb."
    cut = client.chat.completions.create(model="m", messages=ask("hi"))
    assert cut.choices[0].finish_reason == "content_filter"


def test_a_llama_guard_category_maps_onto_the_shared_names(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy(protocol="llama-guard", input={"categories": {"Violence": "flag"}})
    proxy.guard.unsafe_phrases = {"fight": ["Violence"]}
    raw = proxy.client().chat.completions.with_raw_response.create(
        model="m", messages=ask("a fight scene")
    )
    assert raw.headers["x-guardproxy-action"] == "flag"
    assert audit_input(proxy)["categories"] == ["Violence"]


def test_qwen3guard_controversial_follows_the_tenant(start_proxy: ProxyFactory) -> None:
    loose = start_proxy(protocol="qwen3guard", controversial="safe")
    loose.guard.controversial_phrases = ["elections"]
    answer = loose.client().chat.completions.create(model="m", messages=ask("About elections"))
    assert answer.choices[0].message.content == loose.upstream.reply
