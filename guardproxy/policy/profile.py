"""What a tenant's policy means for one request: category actions per direction, and the
policy text the guard model is shown, with the tenant's regions composed in.

Profiles are computed once per policy set, one per region choice a request can make, so the
request path only looks them up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from guardproxy.core.actions import Action
from guardproxy.core.verdict import Direction, GuardPolicy
from guardproxy.errors import RequestError
from guardproxy.policy.model import (
    CategoryAction,
    CustomCategory,
    InputPolicy,
    OutputPolicy,
    RegionPack,
    TenantPolicy,
)

NEEDS_CAUTION = "Needs Caution"


def most_severe(actions: Iterable[CategoryAction]) -> CategoryAction:
    """In `Action`'s one order of severity."""
    return max(actions, key=lambda action: Action(action).severity, default="allow")


@dataclass(frozen=True)
class DirectionRules:
    """Category actions for one direction, and what the guard is told for it."""

    actions: Mapping[str, CategoryAction]
    default: CategoryAction
    guard_policy: GuardPolicy
    reasoning: bool

    def action_for(self, category: str) -> CategoryAction:
        return self.actions.get(category, self.default)


@dataclass(frozen=True)
class Profile:
    tenant: TenantPolicy
    regions: tuple[str, ...]
    input: DirectionRules
    output: DirectionRules

    def rules(self, direction: Direction) -> DirectionRules:
        return self.input if direction is Direction.INPUT else self.output


def select_profile(profiles: Mapping[str, Profile], region: str | None) -> Profile:
    """The tenant's rules, with the region a request picked (X-Guardproxy-Region), if any."""
    base = profiles[""]
    code = (region or "").strip().upper()
    if not code or code in base.tenant.regions:
        return base
    if code not in profiles:
        allowed = ", ".join(base.tenant.allowed_regions) or "none"
        message = f"Region {code!r} is not allowed for this key (allowed: {allowed})."
        raise RequestError(message, "x-guardproxy-region")
    return profiles[code]


def build_profiles(tenant: TenantPolicy, packs: Mapping[str, RegionPack]) -> dict[str, Profile]:
    """The tenant's profile under its own regions ("") and with each allowed extra region."""
    choices = {"": tenant.regions, **{c: (*tenant.regions, c) for c in tenant.allowed_regions}}
    return {key: build_profile(tenant, codes, packs) for key, codes in choices.items()}


def build_profile(
    tenant: TenantPolicy, codes: tuple[str, ...], packs: Mapping[str, RegionPack]
) -> Profile:
    chain = region_chain(codes, packs)
    return Profile(
        tenant,
        tuple(pack.region for pack in chain),
        _direction(tenant, tenant.input, chain, Direction.INPUT),
        _direction(tenant, tenant.output, chain, Direction.OUTPUT),
    )


def region_chain(codes: Iterable[str], packs: Mapping[str, RegionPack]) -> list[RegionPack]:
    """Packs in application order: each pack after the packs it extends, each once."""
    ordered: list[RegionPack] = []

    def visit(code: str) -> None:
        pack = packs[code]
        if pack in ordered:
            return
        for parent in pack.extends:
            visit(parent)
        ordered.append(pack)

    for code in codes:
        visit(code)
    return ordered


def _direction(
    tenant: TenantPolicy,
    policy: InputPolicy | OutputPolicy,
    chain: list[RegionPack],
    direction: Direction,
) -> DirectionRules:
    custom = _custom_categories(tenant, chain)
    actions = _actions(policy.categories, custom, chain, direction, policy.default)
    custom_names = {c.name for c in custom}
    suppressed = frozenset(
        name for name, action in actions.items() if action == "allow" and name not in custom_names
    )
    guard_policy = GuardPolicy(
        suppressed,
        tuple((c.name, c.description) for c in custom if actions.get(c.name) != "allow"),
        _rules_text(tenant, chain),
        tenant.policy_mode,
        tenant.extra_categories,
        controversial=tenant.controversial,
    )
    reasoning = tenant.reasoning if policy.reasoning is None else policy.reasoning
    return DirectionRules(actions, policy.default, guard_policy, reasoning)


def _custom_categories(tenant: TenantPolicy, chain: list[RegionPack]) -> list[CustomCategory]:
    by_name = {c.name: c for pack in chain for c in pack.custom_categories}
    by_name.update({c.name: c for c in tenant.custom_categories})
    return list(by_name.values())


def _actions(
    tenant_map: Mapping[str, CategoryAction],
    custom: list[CustomCategory],
    chain: list[RegionPack],
    direction: Direction,
    default: CategoryAction,
) -> dict[str, CategoryAction]:
    """The tenant's own choice (its map, else its default), tightened by its regions: a
    region never loosens a rule."""
    actions: dict[str, CategoryAction] = {c.name: c.action for c in custom}
    actions.update(tenant_map)
    for pack in chain:
        overrides = (
            pack.categories.input if direction is Direction.INPUT else pack.categories.output
        )
        for name, action in overrides.items():
            actions[name] = most_severe((actions.get(name, default), action))
    return actions


def _rules_text(tenant: TenantPolicy, chain: list[RegionPack]) -> str:
    """Region rules first, in order, then the tenant's own text: static, deterministic."""
    parts = [f"{pack.name} ({pack.region}):\n{pack.rules.strip()}" for pack in chain if pack.rules]
    if tenant.policy.strip():
        parts.append(f"{tenant.tenant}:\n{tenant.policy.strip()}")
    return "\n\n".join(parts)
