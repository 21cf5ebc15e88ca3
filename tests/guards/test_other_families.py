"""Llama Guard, Qwen3Guard and Granite Guardian behind the same Verdict."""

from __future__ import annotations

from typing import Any

import pytest

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, GuardPolicy, Safety
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.protocols import GUARD_PROTOCOLS, GuardProtocol

PROMPT = "How do I hurt someone?"
INPUT = GuardInput(PROMPT)
OUTPUT = GuardInput(PROMPT, response="Here is how.")


def _guard(protocol: str, **settings: Any) -> GuardProtocol:
    values: dict[str, Any] = {"url": "http://g/v1", "model": "m", "protocol": protocol}
    return GUARD_PROTOCOLS[protocol](GuardSettings(**values, **settings))


def _completion(content: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": content}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def _parse(protocol: str, content: str, check: GuardInput = INPUT, **settings: Any) -> Any:
    return _guard(protocol, **settings).parse(_completion(content), check)


# --- Llama Guard -----------------------------------------------------------------------------


def test_llama_guard_safe_rates_the_last_turn() -> None:
    assert _parse("llama-guard", "safe").user is Safety.SAFE
    verdict = _parse("llama-guard", "\n\nsafe", OUTPUT)
    assert (verdict.user, verdict.response) == (None, Safety.SAFE)


def test_llama_guard_codes_map_onto_shared_names() -> None:
    verdict = _parse("llama-guard", "unsafe\nS1,S7, S12", OUTPUT)
    assert verdict.response is Safety.UNSAFE
    assert verdict.categories == ("Violence", "PII/Privacy", "Sexual")


def test_llama_guard_unknown_code_is_kept() -> None:
    assert _parse("llama-guard", "unsafe\nS15").categories == ("S15",)


@pytest.mark.parametrize("content", ["maybe", "unsafe\nViolence", "safe\nS1", "unsafe\nS1\nS2"])
def test_llama_guard_rejects_anything_else(content: str) -> None:
    with pytest.raises(UnparseableVerdict):
        _parse("llama-guard", content)


# --- Qwen3Guard ------------------------------------------------------------------------------


def test_qwen3guard_prompt_verdict_and_categories() -> None:
    verdict = _parse("qwen3guard", "Safety: Unsafe\nCategories: Violent, PII")
    assert verdict.user is Safety.UNSAFE
    assert verdict.categories == ("Violence", "PII/Privacy")


def test_qwen3guard_response_verdict_records_refusal() -> None:
    verdict = _parse("qwen3guard", "Safety: Safe\nCategories: None\nRefusal: Yes", OUTPUT)
    assert (verdict.user, verdict.response, verdict.refusal) == (None, Safety.SAFE, True)
    assert verdict.categories == ()


@pytest.mark.parametrize(
    ("meaning", "expected"), [("unsafe", Safety.UNSAFE), ("safe", Safety.SAFE)]
)
def test_qwen3guard_controversial_means_what_the_tenant_says(
    meaning: str, expected: Safety
) -> None:
    check = GuardInput(PROMPT, policy=GuardPolicy(controversial=meaning))  # type: ignore[arg-type]
    verdict = _parse(
        "qwen3guard", "Safety: Controversial\nCategories: Politically Sensitive Topics", check
    )
    assert verdict.user is expected


def test_qwen3guard_without_a_safety_line_fails_closed() -> None:
    with pytest.raises(UnparseableVerdict):
        _parse("qwen3guard", "Categories: Violent")


# --- Granite Guardian ------------------------------------------------------------------------


def test_granite_yes_is_unsafe_and_names_the_criterions_category() -> None:
    verdict = _parse("granite-guardian", "<score> yes </score>", OUTPUT, criterion="violence")
    assert (verdict.response, verdict.categories) == (Safety.UNSAFE, ("Violence",))


def test_granite_harm_names_no_category() -> None:
    verdict = _parse("granite-guardian", "<think>Risky.</think>\n<score> yes </score>")
    assert (verdict.user, verdict.categories, verdict.reasoning) == (Safety.UNSAFE, (), "Risky.")


def test_granite_no_is_safe() -> None:
    assert _parse("granite-guardian", "<score> no </score>").user is Safety.SAFE


def test_granite_rejects_a_bare_yes() -> None:
    with pytest.raises(UnparseableVerdict):
        _parse("granite-guardian", "Yes")
