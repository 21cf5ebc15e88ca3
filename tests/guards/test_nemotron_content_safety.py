from __future__ import annotations

from typing import Any

import pytest

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Safety, Verdict
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.nemotron_content_safety import NemotronContentSafety

MODEL = "nvidia/nemotron-3-content-safety"
PROMPT = "How can I steal money from here?"
RESPONSE = "I can't help with that."
IMAGE = "data:image/jpeg;base64,AAAA"
INPUT_CHECK = GuardInput(PROMPT)
OUTPUT_CHECK = GuardInput(PROMPT, response=RESPONSE)


def _guard(**settings: Any) -> NemotronContentSafety:
    return NemotronContentSafety(GuardSettings(url="http://guard/v1", model=MODEL, **settings))


def _completion(content: Any, finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, **message}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}


def _parse(content: str, check: GuardInput = INPUT_CHECK, **message: Any) -> Verdict:
    return _guard().parse(_completion(content, **message), check)


# --- request ---------------------------------------------------------------------------------


def test_input_check_sends_the_prompt_as_a_plain_user_string() -> None:
    assert _guard().build_request(INPUT_CHECK) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 128,
        "temperature": 0,
        "chat_template_kwargs": {"enable_thinking": False, "request_categories": "/categories"},
    }


def test_output_check_adds_the_response_as_a_plain_assistant_string() -> None:
    body = _guard().build_request(OUTPUT_CHECK)
    assert body["messages"] == [
        {"role": "user", "content": PROMPT},
        {"role": "assistant", "content": RESPONSE},
    ]


def test_image_goes_first_in_a_parts_list_as_in_nvidias_example() -> None:
    body = _guard().build_request(GuardInput(PROMPT, image_url=IMAGE, response=RESPONSE))
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": IMAGE}},
                {"type": "text", "text": PROMPT},
            ],
        },
        {"role": "assistant", "content": RESPONSE},
    ]


def test_no_system_message_is_ever_sent() -> None:
    body = _guard().build_request(GuardInput(PROMPT, image_url=IMAGE, response=RESPONSE))
    assert [message["role"] for message in body["messages"]] == ["user", "assistant"]


def test_configured_reasoning_enables_thinking() -> None:
    body = _guard(reasoning=True).build_request(INPUT_CHECK)
    assert body["chat_template_kwargs"]["enable_thinking"] is True


def test_per_check_reasoning_overrides_the_configured_default() -> None:
    body = _guard(reasoning=True).build_request(GuardInput(PROMPT, reasoning=False))
    assert body["chat_template_kwargs"]["enable_thinking"] is False


def test_categories_can_be_switched_off() -> None:
    body = _guard(request_categories=False).build_request(INPUT_CHECK)
    assert body["chat_template_kwargs"]["request_categories"] == "/no_categories"


def test_settings_params_override_and_extend_the_defaults() -> None:
    body = _guard(params={"max_tokens": 20, "seed": 7}).build_request(INPUT_CHECK)
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (20, 0, 7)


def test_settings_chat_template_kwargs_win_over_the_computed_ones() -> None:
    kwargs = {"request_categories": "/no_categories", "custom_policy": "No cooking."}
    body = _guard(chat_template_kwargs=kwargs).build_request(INPUT_CHECK)
    assert body["chat_template_kwargs"] == {
        "request_categories": "/no_categories",
        "enable_thinking": False,
        "custom_policy": "No cooking.",
    }


# --- parse: documented shapes ----------------------------------------------------------------


def test_safe_input_verdict() -> None:
    assert _parse("User Safety: safe") == Verdict(user=Safety.SAFE, raw="User Safety: safe")


def test_unsafe_output_verdict_with_categories_from_the_model_card() -> None:
    content = (
        "User Safety: unsafe\nResponse Safety: unsafe\n"
        "Safety Categories: Criminal Planning/Confessions"
    )
    verdict = _parse(content, OUTPUT_CHECK)
    assert verdict == Verdict(
        user=Safety.UNSAFE,
        response=Safety.UNSAFE,
        categories=("Criminal Planning/Confessions",),
        raw=content,
    )


def test_categories_are_split_trimmed_and_canonicalised() -> None:
    verdict = _parse("User Safety: unsafe\nSafety Categories: violence,  S14 , ,Brand Safety")
    assert verdict.categories == ("Violence", "Other", "Brand Safety")


def test_safe_response_to_an_unsafe_prompt() -> None:
    verdict = _parse("User Safety: unsafe\nResponse Safety: safe", OUTPUT_CHECK)
    assert (verdict.user, verdict.response) == (Safety.UNSAFE, Safety.SAFE)


def test_keys_and_values_are_case_insensitive() -> None:
    verdict = _parse("USER SAFETY : Unsafe\nresponse safety:SAFE", OUTPUT_CHECK)
    assert (verdict.user, verdict.response) == (Safety.UNSAFE, Safety.SAFE)


def test_think_trace_in_content_becomes_the_reasoning() -> None:
    verdict = _parse("<think>\nAsks how to steal.\n</think>\n\nUser Safety: unsafe")
    assert (verdict.user, verdict.reasoning) == (Safety.UNSAFE, "Asks how to steal.")


def test_think_trace_in_reasoning_content_becomes_the_reasoning() -> None:
    verdict = _parse("User Safety: unsafe", reasoning_content="Asks how to steal.")
    assert verdict.reasoning == "Asks how to steal."


def test_response_safety_line_on_an_input_check_is_ignored() -> None:
    verdict = _parse("User Safety: safe\nResponse Safety: unsafe")
    assert (verdict.user, verdict.response) == (Safety.SAFE, None)


# --- parse: malformed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "I cannot classify this.",
        "User Safety: safe\nUser Safety: unsafe",
        "User Safety: safe\nuser safety: safe",
        "Safety Categories: Violence",
        "Response Safety: safe",
        "User Safety: maybe",
        "User Safety: safe.",
        "User Safety: unsafe\nThe request is about theft.",
        "Here is my answer:\nUser Safety: safe",
        "User Safety: safe\nResponse Safety: banana",
        "<think>forgot to close\nUser Safety: safe",
    ],
)
def test_answers_outside_the_grammar_are_unparseable(content: str) -> None:
    with pytest.raises(UnparseableVerdict) as caught:
        _parse(content)
    assert caught.value.raw == content


def test_output_check_without_response_safety_is_unparseable_not_inferred() -> None:
    with pytest.raises(UnparseableVerdict, match="Response Safety"):
        _parse("User Safety: safe", OUTPUT_CHECK)


def test_truncated_answer_is_unparseable() -> None:
    completion = _completion("User Safety: safe", finish_reason="length")
    with pytest.raises(UnparseableVerdict, match="truncated"):
        _guard().parse(completion, INPUT_CHECK)


def test_empty_content_is_unparseable_even_with_a_reasoning_trace() -> None:
    completion = _completion(None, reasoning_content="Thinking...")
    with pytest.raises(UnparseableVerdict):
        _guard().parse(completion, INPUT_CHECK)
