"""Nemotron 3.5 v1.1 specifics: policy modes, reasoning budget, unknown and shared categories."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, GuardPolicy, Safety
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.nemotron_content_safety import NemotronContentSafety
from guardproxy.guards.taxonomy import parse_category_list

PROMPT = "Tell me about the rival bank."
RESPONSE = "OtherBank has better rates."
TAXONOMY = GuardPolicy(custom=(("Competitor Promotion", "Naming a rival bank."),))
MODE_A = GuardPolicy(rules="Only discuss our products.", mode="policy")


def _guard(**settings: Any) -> NemotronContentSafety:
    return NemotronContentSafety(GuardSettings(url="http://g/v1", model="m", **settings))


def _completion(content: str, finish_reason: str = "stop") -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}


def test_a_default_tenant_sends_neither_custom_kwarg() -> None:
    kwargs = _guard().build_request(GuardInput(PROMPT))["chat_template_kwargs"]
    assert kwargs == {"enable_thinking": False, "request_categories": "/categories"}


def test_taxonomy_mode_sends_nvidias_bullet_lines_as_custom_taxonomy() -> None:
    kwargs = _guard().build_request(GuardInput(PROMPT, policy=TAXONOMY))["chat_template_kwargs"]
    lines = kwargs["custom_taxonomy"].splitlines()
    assert lines[0] == "- Violence"
    assert lines[-1] == "- Competitor Promotion (Naming a rival bank.)"
    assert "custom_policy" not in kwargs


def test_extra_categories_are_listed_with_the_kept_built_ins() -> None:
    policy = GuardPolicy(suppressed=frozenset({"Other"}), extra=("Unsafe Code",))
    kwargs = _guard().build_request(GuardInput(PROMPT, policy=policy))["chat_template_kwargs"]
    lines = kwargs["custom_taxonomy"].splitlines()
    assert "- Other" not in lines
    assert lines[-1] == "- Unsafe Code"


def test_policy_mode_sends_free_text_as_custom_policy() -> None:
    kwargs = _guard().build_request(GuardInput(PROMPT, policy=MODE_A))["chat_template_kwargs"]
    assert kwargs["custom_policy"].endswith("Additional policy rules:\nOnly discuss our products.")
    assert "custom_taxonomy" not in kwargs


def test_mode_a_unsafe_without_categories_is_a_policy_violation() -> None:
    verdict = _guard().parse(_completion("User Safety: unsafe"), GuardInput(PROMPT, policy=MODE_A))
    assert verdict.user is Safety.UNSAFE
    assert verdict.categories == ()
    assert verdict.policy_violation


def test_mode_b_unsafe_without_categories_is_not_a_policy_violation() -> None:
    verdict = _guard().parse(
        _completion("User Safety: unsafe"), GuardInput(PROMPT, policy=TAXONOMY)
    )
    assert not verdict.policy_violation


def test_custom_names_come_back_verbatim_even_when_the_model_echoes_the_description() -> None:
    answer = "User Safety: unsafe\nSafety Categories: competitor promotion (Naming a rival bank.)"
    verdict = _guard().parse(_completion(answer), GuardInput(PROMPT, policy=TAXONOMY))
    assert verdict.categories == ("Competitor Promotion",)


def test_sexual_minor_keeps_its_parentheses() -> None:
    assert parse_category_list("Sexual (minor)") == ("Sexual (minor)",)


def test_an_unknown_category_is_kept_verbatim() -> None:
    answer = "User Safety: unsafe\nSafety Categories: Unsafe Code Execution, Threat"
    verdict = _guard().parse(_completion(answer), GuardInput(PROMPT))
    assert verdict.categories == ("Unsafe Code Execution", "Threat")


def test_reasoning_gets_its_own_token_budget_and_temperature_zero() -> None:
    body = _guard().build_request(GuardInput(PROMPT, reasoning=True))
    assert (body["max_tokens"], body["temperature"]) == (1024, 0)
    assert body["chat_template_kwargs"]["enable_thinking"] is True
    assert (
        _guard(reasoning_max_tokens=2048).build_request(GuardInput(PROMPT, reasoning=True))[
            "max_tokens"
        ]
        == 2048
    )


def test_a_trace_directly_followed_by_the_verdict_parses() -> None:
    content = "<think>\nThe user asks... S3: Criminal Planning.\n\n</think>User Safety: unsafe"
    verdict = _guard().parse(_completion(content), GuardInput(PROMPT, reasoning=True))
    assert verdict.user is Safety.UNSAFE
    assert verdict.reasoning == "The user asks... S3: Criminal Planning."


def test_a_trace_cut_off_by_max_tokens_fails_closed() -> None:
    with pytest.raises(UnparseableVerdict, match="truncated"):
        _guard().parse(_completion("<think>\nThe user", "length"), GuardInput(PROMPT))


def test_sglang_fold_puts_the_answer_in_the_user_turn_with_the_template_wrapper() -> None:
    body = _guard(response_in_user_turn=True).build_request(GuardInput(PROMPT, response=RESPONSE))
    assert body["messages"] == [
        {"role": "user", "content": f"{PROMPT}\nresponse: agent:  ### Answer: {RESPONSE}"}
    ]


@pytest.mark.parametrize("key", ["policy_message", "policy_kwarg"])
def test_removed_settings_get_a_clear_error(key: str) -> None:
    with pytest.raises(ValidationError, match=f"'{key}' was removed"):
        GuardSettings(url="http://g/v1", model="m", **{key: True})


def test_both_custom_kwargs_in_the_guard_config_are_refused() -> None:
    kwargs = {"custom_policy": "a", "custom_taxonomy": "- b"}
    with pytest.raises(ValidationError, match="mutually exclusive"):
        GuardSettings(url="http://g/v1", model="m", chat_template_kwargs=kwargs)
