"""`guardproxy policy show`: the exact guard requests a tenant's policy produces."""

from __future__ import annotations

import json
from typing import Any

from guardproxy.config import EXCLUSIVE_KWARGS, GuardSettings, Settings
from guardproxy.core.verdict import Direction, GuardInput
from guardproxy.errors import RequestError
from guardproxy.guards.protocols import CLASSIFIER_PROTOCOLS, GUARD_PROTOCOLS, guard_calls
from guardproxy.policy.model import PolicySet, TenantPolicy
from guardproxy.policy.profile import Profile, build_profiles, select_profile

SAMPLE_PROMPT = "<the user's last turn>"
SAMPLE_RESPONSE = "<the model's answer>"
CHAT_PATH = "/chat/completions"


def show_guard_request(
    settings: Settings,
    tenant: TenantPolicy,
    policies: PolicySet,
    region: str | None,
    direction: Direction,
) -> str:
    """Each JSON body sent to each of the tenant's guards for one check (a guard of the chain
    that does not judge answers is left out of the output check), with its texts spelled out."""
    try:
        profile = select_profile(build_profiles(tenant, policies.regions), region)
    except RequestError as exc:
        return str(exc)
    names = [
        entry.guard
        for entry in tenant.guards
        if direction is Direction.INPUT or entry.output is not False
    ]
    shown = [_guard_requests(settings, tenant, profile, direction, name) for name in names]
    return "\n".join(shown) or f"# tenant {tenant.tenant}: no guard judges the {direction.value}"


def _guard_requests(
    settings: Settings, tenant: TenantPolicy, profile: Profile, direction: Direction, name: str
) -> str:
    guard = settings.guards[name]
    rules = profile.rules(direction)
    response = SAMPLE_RESPONSE if direction is Direction.OUTPUT else None
    check = GuardInput(SAMPLE_PROMPT, None, response, rules.reasoning, rules.guard_policy)
    posts = _posts(guard, guard_calls(check))
    shown = [
        f"# tenant {tenant.tenant}, {direction.value} check, guard {name} "
        f"({guard.protocol}), regions: {', '.join(profile.regions) or 'none'}, "
        f"policy_mode: {tenant.policy_mode}, {len(posts)} call(s) in parallel"
    ]
    for number, (path, body) in enumerate(posts, start=1):
        shown += [f"# call {number}: POST {guard.url.rstrip('/')}{path}"]
        shown += [json.dumps(body, indent=2, ensure_ascii=False)]
        shown += _texts(body)
    return "\n".join(shown)


def _posts(guard: GuardSettings, calls: list[GuardInput]) -> list[tuple[str, dict[str, Any]]]:
    """Each (path, body) sent for the calls: a chat-completions body per call, or what a
    classifier sends instead (its own path; its segments in one batch or one body each)."""
    classifier = CLASSIFIER_PROTOCOLS.get(guard.protocol)
    if classifier is None:
        protocol = GUARD_PROTOCOLS[guard.protocol](guard)
        return [(CHAT_PATH, protocol.build_request(call)) for call in calls]
    wire = classifier(guard)
    return [(wire.path, post) for call in calls for post in wire.posts(wire.build_request(call))]


def _texts(body: dict[str, object]) -> list[str]:
    """Multi-line strings as the model reads them (JSON escapes hide their lines)."""
    messages = body.get("messages")
    texts = [
        ("message text", m["content"])
        for m in (messages if isinstance(messages, list) else [])
        if isinstance(m, dict) and isinstance(m.get("content"), str) and "\n" in m["content"]
    ]
    kwargs = body.get("chat_template_kwargs")
    if isinstance(kwargs, dict):
        texts += [(f"chat_template_kwargs.{k}", kwargs[k]) for k in EXCLUSIVE_KWARGS if k in kwargs]
    return [line for label, text in texts for line in (f"# {label}, as the model reads it:", text)]
