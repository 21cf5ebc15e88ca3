"""What the guard's verdicts mean for a tenant: policy_action, unknown and shared categories,
and the guard configurations `guardproxy check` refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from guardproxy.config import load_settings
from guardproxy.core.verdict import GuardInput, GuardPolicy, Safety, Verdict
from guardproxy.pipeline.checks import CheckResult, CheckStatus, run_checks
from guardproxy.pipeline.decision import Action, decide
from guardproxy.policy.loader import load_policies
from guardproxy.policy.model import ChainedGuard, TenantPolicy
from guardproxy.policy.profile import build_profile
from guardproxy.yamlfile import InvalidConfig
from tests.policy.test_loader import folder, problems

pytestmark = pytest.mark.anyio


def _tenant(**keys: Any) -> TenantPolicy:
    return TenantPolicy(
        tenant="t", keys=("k",), guards=(ChainedGuard(guard="g"),), upstream="u", **keys
    )


class OneVerdict:
    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict

    async def classify(self, check: GuardInput) -> Verdict:
        return self.verdict


async def _result(verdict: Verdict, check: GuardInput) -> CheckResult:
    return await run_checks(OneVerdict(verdict), [check])


# --- decisions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy_action", "expected"), [("block", Action.BLOCK), ("flag", Action.FLAG)]
)
async def test_a_policy_violation_without_categories_gets_policy_action(
    policy_action: str, expected: Action
) -> None:
    tenant = _tenant(policy_action=policy_action, input={"default": "allow"})
    verdict = Verdict(Safety.UNSAFE, policy_violation=True)
    result = await _result(verdict, GuardInput("p"))
    assert result.summary()["policy"] == "violated"
    assert decide(result, tenant, build_profile(tenant, (), {}).input) is expected


async def test_a_policy_violation_beside_categories_takes_the_most_severe_action() -> None:
    tenant = _tenant(policy_action="flag", input={"categories": {"PII/Privacy": "block"}})
    verdict = Verdict(Safety.UNSAFE, categories=("PII/Privacy",), policy_violation=True)
    result = await _result(verdict, GuardInput("p"))
    assert decide(result, tenant, build_profile(tenant, (), {}).input) is Action.BLOCK


async def test_an_unknown_category_takes_the_default_and_is_recorded_verbatim() -> None:
    tenant = _tenant(input={"default": "flag"})
    verdict = Verdict(Safety.UNSAFE, categories=("Unsafe Code Execution",))
    result = await _result(verdict, GuardInput("p"))
    assert result.summary()["unknown_categories"] == ["Unsafe Code Execution"]
    assert decide(result, tenant, build_profile(tenant, (), {}).input) is Action.FLAG


async def test_an_extra_category_is_known_and_gets_its_action() -> None:
    tenant = _tenant(
        extra_categories=["Unsafe Code Execution"],
        input={"categories": {"Unsafe Code Execution": "flag"}},
    )
    rules = build_profile(tenant, (), {}).input
    check = GuardInput("p", policy=rules.guard_policy)
    result = await _result(Verdict(Safety.UNSAFE, categories=("Unsafe Code Execution",)), check)
    assert "unknown_categories" not in result.summary()
    assert decide(result, tenant, rules) is Action.FLAG


async def test_categories_of_an_output_check_with_an_unsafe_prompt_are_marked_shared() -> None:
    verdict = Verdict(Safety.UNSAFE, Safety.UNSAFE, ("Violence", "Profanity"))
    result = await _result(verdict, GuardInput("p", response="r"))
    assert result.categories == ("Violence", "Profanity")  # none dropped
    assert result.summary()["categories_may_be_the_prompts"] == ["Violence", "Profanity"]


async def test_categories_of_a_safe_response_do_not_decide_the_output() -> None:
    verdict = Verdict(Safety.UNSAFE, Safety.SAFE, ("Violence",))
    result = await _result(verdict, GuardInput("p", response="r"))
    assert result.status is CheckStatus.SAFE


async def test_a_missing_trace_shows_as_unavailable_in_the_audit() -> None:
    result = await _result(Verdict(Safety.SAFE, reasoning_unavailable=True), GuardInput("p"))
    assert result.summary(reasoning=True)["reasoning"] == "unavailable"


def test_policy_mode_reaches_the_guard_policy() -> None:
    tenant = _tenant(policy_mode="separate", policy="Only our products.")
    policy = build_profile(tenant, (), {}).input.guard_policy
    assert (policy.mode, policy.rules) == ("separate", "t:\nOnly our products.")
    assert policy.rules_part() == GuardPolicy(
        rules=policy.rules, mode="policy", lists_categories=False
    )


# --- check -----------------------------------------------------------------------------------


def _config(path: Path, guard: str) -> None:
    path.write_text(
        f"guards: {{g: {{url: http://g/v1, model: m, {guard}}}}}\n"
        "upstreams: {u: {url: http://u/v1}}\n"
    )


def test_extra_categories_may_be_given_actions(tmp_path: Path) -> None:
    text = (
        "tenant: a\nkeys: [k]\nguard: g\nupstream: u\nextra_categories: [Unsafe Code]\n"
        "input:\n  categories: {Unsafe Code: flag}\n"
    )
    path = folder(tmp_path, {"a.yaml": text})
    assert load_policies(load_settings(path, {}), {}).tenants["a"].extra_categories == (
        "Unsafe Code",
    )


def test_a_fixed_taxonomy_guard_refuses_custom_categories(tmp_path: Path) -> None:
    text = (
        "tenant: a\nkeys: [k]\nguard: g\nupstream: u\n"
        "custom_categories: [{name: Competitor Promotion}]\n"
    )
    path = folder(tmp_path, {"a.yaml": text})
    _config(path, "protocol: llama-guard")
    assert problems(path) == [
        "policies/a.yaml:3: guard 'g' (llama-guard) cannot be told custom categories; use a "
        "Nemotron guard or drop them (regions add rules)"
    ]


def test_policy_mode_needs_a_nemotron_content_safety_guard(tmp_path: Path) -> None:
    path = folder(
        tmp_path, {"a.yaml": "tenant: a\nkeys: [k]\nguard: g\nupstream: u\npolicy_mode: policy\n"}
    )
    _config(path, "protocol: qwen3guard")
    assert problems(path) == [
        "policies/a.yaml:5: policy_mode: 'policy' needs a nemotron-content-safety guard; "
        "'g' is qwen3guard"
    ]


def test_a_guard_kwarg_that_would_meet_the_other_mode_is_refused(tmp_path: Path) -> None:
    text = "tenant: a\nkeys: [k]\nguard: g\nupstream: u\npolicy_mode: policy\npolicy: Be nice.\n"
    path = folder(tmp_path, {"a.yaml": text})
    _config(path, "chat_template_kwargs: {custom_taxonomy: '- Violence'}")
    [problem] = problems(path)
    assert "would send custom_policy and custom_taxonomy together" in problem


def test_policy_message_gets_a_clear_error(tmp_path: Path) -> None:
    path = folder(tmp_path, {"a.yaml": "tenant: a\nkeys: [k]\nguard: g\nupstream: u\n"})
    _config(path, "policy_message: true")
    with pytest.raises(InvalidConfig, match="'policy_message' was removed"):
        load_settings(path, {})
