"""From check results and the tenant's rules to what happens to the exchange.

The decision is made here from the categories the guard returned, whatever the guard was told:
a suppressed category stays allowed even if the model names it anyway.
"""

from __future__ import annotations

from guardproxy.core.actions import Action, most_severe_action
from guardproxy.pipeline.checks import CheckResult, CheckStatus
from guardproxy.policy.model import CategoryAction, TenantPolicy
from guardproxy.policy.profile import NEEDS_CAUTION, DirectionRules, most_severe

__all__ = ["Action", "categories_to_redact", "decide", "most_severe_action"]


def decide(result: CheckResult, tenant: TenantPolicy, rules: DirectionRules) -> Action:
    if result.status is CheckStatus.ERROR:
        # Shed calls always fail: load must never turn into unchecked traffic.
        failing = tenant.on_guard_error == "block" or result.overloaded
        return Action.FAIL if failing else Action.ALLOW
    if result.status is not CheckStatus.UNSAFE:
        return Action.ALLOW
    return Action(unsafe_action(result, tenant, rules))


def unsafe_action(
    result: CheckResult, tenant: TenantPolicy, rules: DirectionRules
) -> CategoryAction:
    """Category actions for the categories named; `policy_action` where the tenant's
    natural-language policy (Mode A) judged the turn unsafe; the most severe wins."""
    if not result.policy_violation:
        return category_action(result.categories, tenant, rules)
    if not result.categories:
        return tenant.policy_action
    return most_severe((tenant.policy_action, category_action(result.categories, tenant, rules)))


def category_action(
    categories: tuple[str, ...], tenant: TenantPolicy, rules: DirectionRules
) -> CategoryAction:
    if not categories:
        return rules.default  # unsafe without a category (e.g. the reasoning guard)
    if set(categories) == {NEEDS_CAUTION}:
        # Aegis' Permissive vs Defensive variants differ only in this (guard-protocols.md §4).
        return tenant.needs_caution
    named = [c for c in categories if c != NEEDS_CAUTION]
    return most_severe(rules.action_for(c) for c in named)


def categories_to_redact(result: CheckResult, rules: DirectionRules) -> tuple[str, ...]:
    return tuple(c for c in result.categories if rules.action_for(c) == "redact")
