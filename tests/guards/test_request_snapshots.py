"""The exact guard request bodies, per protocol and per Nemotron policy mode, against stored
snapshots reviewed against the published interfaces (nemotron-3.5-v1.1.md §2,
guard-protocols.md §6). Regenerate with `GUARDPROXY_WRITE_SNAPSHOTS=1` and review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, GuardPolicy
from guardproxy.guards.protocols import GUARD_PROTOCOLS, guard_calls

SNAPSHOTS = Path(__file__).parent / "snapshots" / "bodies"
PROMPT = "How can I burn a house down?"
RESPONSE = "I can't help with that."
IMAGE = "data:image/jpeg;base64,/9j/AAAA"
TAILORED = GuardPolicy(
    suppressed=frozenset({"Violence", "Profanity"}),
    custom=(("Competitor Promotion", "Recommending another bank's products."),),
    rules="European Union (EU):\nTreat as unsafe instructions to evade sanctions.",
)
RULES_ONLY = GuardPolicy(rules="Only discuss our products and services.")


def _mode(policy: GuardPolicy, mode: str) -> GuardPolicy:
    return GuardPolicy(policy.suppressed, policy.custom, policy.rules, mode)  # type: ignore[arg-type]


CASES: dict[str, tuple[str, dict[str, Any], GuardInput]] = {
    "nemotron_standard_input": ("nemotron-content-safety", {}, GuardInput(PROMPT)),
    "nemotron_standard_output_image": (
        "nemotron-content-safety",
        {},
        GuardInput(PROMPT, IMAGE, RESPONSE),
    ),
    "nemotron_reasoning_output": (
        "nemotron-content-safety",
        {},
        GuardInput(PROMPT, response=RESPONSE, reasoning=True),
    ),
    "nemotron_taxonomy_input": (
        "nemotron-content-safety",
        {},
        GuardInput(PROMPT, policy=_mode(TAILORED, "taxonomy")),
    ),
    "nemotron_policy_input": (
        "nemotron-content-safety",
        {},
        GuardInput(PROMPT, policy=_mode(RULES_ONLY, "policy")),
    ),
    "nemotron_separate_output": (
        "nemotron-content-safety",
        {},
        GuardInput(PROMPT, response=RESPONSE, policy=_mode(TAILORED, "separate")),
    ),
    "nemotron_sglang_output": (
        "nemotron-content-safety",
        {"response_in_user_turn": True},
        GuardInput(PROMPT, response=RESPONSE),
    ),
    "llama_guard_input_image": ("llama-guard", {}, GuardInput(PROMPT, IMAGE)),
    "llama_guard_output": ("llama-guard", {}, GuardInput(PROMPT, response=RESPONSE)),
    "qwen3guard_output": ("qwen3guard", {}, GuardInput(PROMPT, IMAGE, RESPONSE)),
    "granite_guardian_input": ("granite-guardian", {}, GuardInput(PROMPT)),
    "granite_guardian_output_think": (
        "granite-guardian",
        {"criterion": "violence"},
        GuardInput(PROMPT, response=RESPONSE, reasoning=True),
    ),
}


def _bodies(name: str) -> list[dict[str, Any]]:
    protocol, settings, check = CASES[name]
    values: dict[str, Any] = {"url": "http://guard/v1", "model": "guard-model", **settings}
    guard = GUARD_PROTOCOLS[protocol](GuardSettings(protocol=protocol, **values))
    return [guard.build_request(call) for call in guard_calls(check)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_request_bodies_match_their_snapshots(name: str) -> None:
    path = SNAPSHOTS / f"{name}.json"
    bodies = _bodies(name)
    if os.environ.get("GUARDPROXY_WRITE_SNAPSHOTS"):
        path.write_text(json.dumps(bodies, indent=2, ensure_ascii=False) + "\n")
    assert bodies == json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_body_has_a_system_message_or_both_policy_kwargs(name: str) -> None:
    for body in _bodies(name):
        roles = [message["role"] for message in body["messages"]]
        assert roles in (["user"], ["user", "assistant"])
        kwargs = body.get("chat_template_kwargs", {})
        assert not {"custom_policy", "custom_taxonomy"} <= set(kwargs)


def test_nemotron_kwargs_have_the_documented_types() -> None:
    for name in ("nemotron_taxonomy_input", "nemotron_policy_input", "nemotron_separate_output"):
        for body in _bodies(name):
            kwargs = body["chat_template_kwargs"]
            assert isinstance(kwargs["enable_thinking"], bool)
            assert kwargs["request_categories"] in ("/categories", "/no_categories")
            for key in ("custom_policy", "custom_taxonomy"):
                assert isinstance(kwargs.get(key, ""), str)


def test_separate_mode_sends_a_categories_call_and_a_rules_only_call() -> None:
    categories, rules = _bodies("nemotron_separate_output")
    taxonomy = categories["chat_template_kwargs"]["custom_taxonomy"]
    assert "- Competitor Promotion (Recommending another bank's products.)" in taxonomy
    assert "European Union" not in taxonomy
    assert "custom_policy" not in categories["chat_template_kwargs"]
    assert rules["chat_template_kwargs"]["custom_policy"] == TAILORED.rules
    assert categories["messages"] == rules["messages"]
