"""Category actions, suppression, regions and the composed guard policy."""

from __future__ import annotations

from typing import Any

import pytest

from guardproxy.core.verdict import Direction
from guardproxy.errors import RequestError
from guardproxy.guards.taxonomy import NEMOTRON_CATEGORIES, render_policy
from guardproxy.pipeline.checks import CheckResult, CheckStatus
from guardproxy.pipeline.decision import Action, categories_to_redact, decide
from guardproxy.policy.model import CustomCategory, RegionPack, TenantPolicy
from guardproxy.policy.profile import build_profile, build_profiles, region_chain, select_profile

EU = RegionPack(
    region="EU",
    name="European Union",
    rules="- EU rule.",
    categories={"output": {"PII/Privacy": "redact"}},
)
DE = RegionPack(
    region="DE",
    name="Germany",
    extends=("EU",),
    rules="- DE rule.",
    custom_categories=(CustomCategory(name="Unconstitutional Symbols"),),
)
FR = RegionPack(
    region="FR",
    name="France",
    extends=("EU",),
    rules="- FR rule.",
    categories={"input": {"Violence": "block"}},
)
PACKS = {"EU": EU, "DE": DE, "FR": FR}


def tenant(**fields: Any) -> TenantPolicy:
    return TenantPolicy.model_validate(
        {"tenant": "t", "keys": ["k"], "guard": "g", "upstream": "u", **fields}
    )


def unsafe(*categories: str) -> CheckResult:
    return CheckResult(CheckStatus.UNSAFE, categories)


def test_allowed_category_is_suppressed_in_the_guard_policy_and_in_the_decision() -> None:
    policy = tenant(input={"categories": {"Violence": "allow"}})
    rules = build_profile(policy, (), {}).input
    assert "Violence" in rules.guard_policy.suppressed
    assert decide(unsafe("Violence"), policy, rules) is Action.ALLOW  # even if the model says it
    assert decide(unsafe("Violence", "Threat"), policy, rules) is Action.BLOCK


def test_most_severe_action_wins_and_unknown_categories_use_the_default() -> None:
    policy = tenant(output={"default": "flag", "categories": {"Profanity": "redact"}})
    rules = build_profile(policy, (), {}).output
    assert decide(unsafe("Profanity"), policy, rules) is Action.REDACT
    assert decide(unsafe("Profanity", "Something New"), policy, rules) is Action.REDACT
    assert decide(unsafe("Something New"), policy, rules) is Action.FLAG
    assert decide(unsafe(), policy, rules) is Action.FLAG  # unsafe without categories
    assert categories_to_redact(unsafe("Profanity", "Violence"), rules) == ("Profanity",)


@pytest.mark.parametrize(("switch", "expected"), [("allow", Action.ALLOW), ("block", Action.BLOCK)])
def test_needs_caution_alone_follows_the_switch(switch: str, expected: Action) -> None:
    policy = tenant(needs_caution=switch)
    rules = build_profile(policy, (), {}).input
    assert decide(unsafe("Needs Caution"), policy, rules) is expected
    assert decide(unsafe("Needs Caution", "Violence"), policy, rules) is Action.BLOCK


def test_guard_errors_follow_on_guard_error() -> None:
    error = CheckResult(CheckStatus.ERROR, error="down")
    rules = build_profile(tenant(), (), {}).input
    assert decide(error, tenant(), rules) is Action.FAIL
    assert decide(error, tenant(on_guard_error="allow"), rules) is Action.ALLOW


def test_custom_categories_carry_their_action_and_reach_the_guard() -> None:
    custom = [{"name": "Competitor Promotion", "description": "Naming rivals.", "action": "flag"}]
    policy = tenant(custom_categories=custom)
    rules = build_profile(policy, (), {}).input
    assert decide(unsafe("Competitor Promotion"), policy, rules) is Action.FLAG
    assert rules.guard_policy.custom == (("Competitor Promotion", "Naming rivals."),)


def test_regions_compose_after_their_parents_and_only_tighten() -> None:
    assert [p.region for p in region_chain(["DE", "FR"], PACKS)] == ["EU", "DE", "FR"]
    policy = tenant(
        regions=["DE"],
        input={"categories": {"Violence": "allow"}},
        output={"categories": {"PII/Privacy": "allow"}},
        policy="Tenant rule.",
    )
    profile = build_profile(policy, ("DE", "FR"), PACKS)
    assert profile.regions == ("EU", "DE", "FR")
    assert profile.input.action_for("Violence") == "block"  # FR tightens the tenant's allow
    assert profile.output.action_for("PII/Privacy") == "redact"  # EU tightens too
    assert profile.input.guard_policy.rules == (
        "European Union (EU):\n- EU rule.\n\nGermany (DE):\n- DE rule.\n\n"
        "France (FR):\n- FR rule.\n\nt:\nTenant rule."
    )
    assert ("Unconstitutional Symbols", "") in profile.input.guard_policy.custom


def test_a_request_may_pick_only_an_allowed_region() -> None:
    policy = tenant(regions=["EU"], allowed_regions=["FR"])
    profiles = build_profiles(policy, PACKS)
    assert select_profile(profiles, None).regions == ("EU",)
    assert select_profile(profiles, "fr").regions == ("EU", "FR")
    assert select_profile(profiles, "EU").regions == ("EU",)
    with pytest.raises(RequestError, match="'DE' is not allowed"):
        select_profile(profiles, "DE")


def test_composition_is_deterministic_and_keeps_the_original_numbers() -> None:
    policy = tenant(
        input={"categories": {"Violence": "allow"}},
        custom_categories=[{"name": "Spam", "description": "Bulk ads."}],
    )
    first = build_profile(policy, (), {}).input.guard_policy
    second = build_profile(policy, (), {}).input.guard_policy
    assert first == second
    text, numbering = render_policy(NEMOTRON_CATEGORIES, first)
    assert text.splitlines()[0] == "S2: Sexual."  # S1 Violence suppressed, numbers kept
    assert "S24: Spam.\nBulk ads." in text
    assert numbering[23] == "Spam"


def test_reasoning_is_per_tenant_and_per_direction() -> None:
    profile = build_profile(tenant(reasoning="on", output={"reasoning": False}), (), {})
    assert profile.rules(Direction.INPUT).reasoning is True
    assert profile.rules(Direction.OUTPUT).reasoning is False


def test_a_region_never_loosens_the_tenants_default() -> None:
    pack = RegionPack(
        region="US",
        name="United States",
        categories={"output": {"Political/Misinformation/Conspiracy": "flag"}},
    )
    policy = tenant(regions=["US"], output={"default": "block"})
    rules = build_profile(policy, ("US",), {"US": pack}).output
    assert rules.action_for("Political/Misinformation/Conspiracy") == "block"
