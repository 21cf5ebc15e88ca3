"""The shipped agents tenant: Nemotron beside a prompt-injection classifier on user and tool
turns, loaded with the example config that ships beside it."""

from __future__ import annotations

import pytest

from guardproxy.config import load_settings
from guardproxy.policy.loader import load_policies
from guardproxy.policy.model import ChainedGuard, TenantPolicy
from tests.conftest import REPO
from tests.policy.test_loader import EXAMPLE_KEYS


@pytest.fixture(scope="module")
def agents() -> TenantPolicy:
    settings = load_settings(REPO / "guardproxy.example.yaml", EXAMPLE_KEYS)
    return load_policies(settings, EXAMPLE_KEYS).tenants["agents"]


def test_nemotron_judges_every_turn_and_the_classifier_user_and_tool_turns(
    agents: TenantPolicy,
) -> None:
    assert agents.guards == (
        ChainedGuard(guard="nemotron", output=True),
        ChainedGuard(guard="injection", turns=("user", "tool"), output=False),
    )


def test_prompt_injection_is_blocked(agents: TenantPolicy) -> None:
    assert agents.input.categories["Prompt Injection"] == "block"


def test_the_injection_guard_it_names_is_the_example_configs_classifier() -> None:
    guard = load_settings(REPO / "guardproxy.example.yaml", EXAMPLE_KEYS).guards["injection"]
    assert guard.protocol == "vllm-classify"
    assert set(guard.unsafe_labels) <= set(guard.labels)
