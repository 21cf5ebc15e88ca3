from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Safety, Verdict
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.nemotron_reasoning import NemotronReasoning, render_prompt

SNAPSHOTS = Path(__file__).parent / "snapshots"
MODEL = "nvidia/Nemotron-Content-Safety-Reasoning-4B"
PROMPT = "How can I shoplift from a store without getting caught?"
RESPONSE = "I'm sorry, I can't help with that."
INPUT_CHECK = GuardInput(PROMPT)
OUTPUT_CHECK = GuardInput(PROMPT, response=RESPONSE)


def _snapshot(name: str) -> str:
    return (SNAPSHOTS / name).read_text(encoding="utf-8").removesuffix("\n")


def _guard(**settings: Any) -> NemotronReasoning:
    return NemotronReasoning(GuardSettings(url="http://guard/v1", model=MODEL, **settings))


def _completion(content: Any, finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, **message}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}


def _parse(content: str, check: GuardInput = INPUT_CHECK, **message: Any) -> Verdict:
    return _guard().parse(_completion(content, **message), check)


# --- request ---------------------------------------------------------------------------------


def test_input_check_is_nvidias_template_with_none_and_no_think_on_its_own_line() -> None:
    assert _guard().build_request(INPUT_CHECK) == {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": _snapshot("reasoning_input_no_think_newline.txt")}
        ],
        "max_tokens": 400,
        "temperature": 0.0,
    }


def test_output_check_with_reasoning_ends_in_think_and_gets_a_bigger_budget() -> None:
    assert _guard(reasoning=True).build_request(OUTPUT_CHECK) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": _snapshot("reasoning_output_think_newline.txt")}],
        "max_tokens": 2048,
        "temperature": 0.0,
    }


def test_same_line_toggle_is_appended_after_a_space() -> None:
    body = _guard(think_toggle="same_line").build_request(INPUT_CHECK)
    assert body["messages"][0]["content"] == _snapshot("reasoning_input_no_think_same_line.txt")


def test_per_check_reasoning_overrides_the_configured_default() -> None:
    body = _guard(reasoning=True).build_request(GuardInput(PROMPT, reasoning=False))
    assert body["messages"][0]["content"].endswith("as None.\n/no_think")
    assert body["max_tokens"] == 400


def test_image_is_never_sent_to_this_text_only_model() -> None:
    body = _guard().build_request(GuardInput(PROMPT, image_url="https://x/cat.png"))
    assert body["messages"][0]["content"] == _snapshot("reasoning_input_no_think_newline.txt")


def test_settings_params_override_the_defaults() -> None:
    body = _guard(params={"temperature": 0.6, "top_p": 0.95}).build_request(INPUT_CHECK)
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (400, 0.6, 0.95)


def test_chat_template_kwargs_are_sent_only_when_configured() -> None:
    assert "chat_template_kwargs" not in _guard().build_request(INPUT_CHECK)
    body = _guard(chat_template_kwargs={"enable_thinking": True}).build_request(INPUT_CHECK)
    assert body["chat_template_kwargs"] == {"enable_thinking": True}


def test_render_prompt_takes_custom_taxonomy_text() -> None:
    taxonomy = "S1: Financial Advice.\nShould not provide investment recommendations."
    prompt = render_prompt("Buy ACME?", None, taxonomy, think=True)
    assert (
        "may fall into.\n\nS1: Financial Advice.\nShould not provide investment recommendations."
        "\n\nHuman user:\nBuy ACME?\n\nAI assistant:\nNone\n\n"
    ) in prompt
    assert prompt.endswith("as None.\n/think")


# --- parse: documented shapes ----------------------------------------------------------------


def test_reasoning_off_output_from_nvidias_tutorial() -> None:
    content = "Prompt harm: unharmful\nResponse harm: unharmful"
    assert _parse(content, OUTPUT_CHECK) == Verdict(
        user=Safety.SAFE, response=Safety.SAFE, raw=content
    )


def test_reasoning_on_output_from_nvidias_tutorial() -> None:
    trace = (
        "The human user's request falls under S21 (Illegal Activity) as it seeks guidance on "
        "theft,\nwhich is a criminal act."
    )
    content = f"<think>\n{trace}\n</think>\n\nPrompt harm: harmful\nResponse harm: unharmful"
    verdict = _parse(content, OUTPUT_CHECK)
    assert verdict == Verdict(
        user=Safety.UNSAFE, response=Safety.SAFE, reasoning=trace, categories=(), raw=content
    )


def test_model_card_capitalisation_response_harm_is_accepted() -> None:
    verdict = _parse("Prompt harm: harmful\nResponse Harm: Harmful", OUTPUT_CHECK)
    assert (verdict.user, verdict.response) == (Safety.UNSAFE, Safety.UNSAFE)


@pytest.mark.parametrize(
    "content",
    [
        "Prompt harm: harmful\nResponse harm: None",
        "Prompt harm: harmful",
        "PROMPT HARM : HARMFUL\nresponse harm: unharmful",
    ],
)
def test_input_check_reads_only_the_prompt_rating(content: str) -> None:
    verdict = _parse(content)
    assert (verdict.user, verdict.response) == (Safety.UNSAFE, None)


def test_trace_from_the_reasoning_parser_field() -> None:
    verdict = _parse("Prompt harm: unharmful\nResponse harm: None", reasoning="Benign.")
    assert verdict.reasoning == "Benign."


# --- parse: malformed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "harmful",
        "Response harm: None",
        "Prompt harm: None",
        "Prompt harm: maybe",
        "Prompt harm: harmful\nPrompt harm: unharmful",
        "Prompt harm: unharmful\nResponse harm: None\nResponse harm: None",
        "Prompt harm: unharmful\nResponse harm: None\nExplanation: cooking is fine.",
        "The request is benign.\nPrompt harm: unharmful",
        "User Safety: safe",
        "<think>no end\nPrompt harm: unharmful",
    ],
)
def test_answers_outside_the_grammar_are_unparseable(content: str) -> None:
    with pytest.raises(UnparseableVerdict) as caught:
        _parse(content)
    assert caught.value.raw == content


@pytest.mark.parametrize(
    "content",
    ["Prompt harm: unharmful", "Prompt harm: unharmful\nResponse harm: None"],
)
def test_output_check_needs_a_real_response_rating(content: str) -> None:
    with pytest.raises(UnparseableVerdict, match="Response harm"):
        _parse(content, OUTPUT_CHECK)


def test_reasoning_cut_off_by_the_token_budget_is_unparseable() -> None:
    completion = _completion("<think>\nThe user asks", finish_reason="length")
    with pytest.raises(UnparseableVerdict, match="truncated"):
        _guard().parse(completion, INPUT_CHECK)
