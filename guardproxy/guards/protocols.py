"""The guard seam: one protocol turns a check into a chat-completions body and reads the answer.

`GUARD_PROTOCOLS` maps the config's `protocol:` names to implementations, and
`GUARD_CAPABILITIES` says what each model can be told (`guardproxy check` refuses a tenant
whose policy needs more).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, GuardPolicy, PolicyMode, Verdict
from guardproxy.guards.classifier import ClassifierProtocol
from guardproxy.guards.granite_guardian import GRANITE_CATEGORIES, GraniteGuardian
from guardproxy.guards.llama_guard import LLAMA_GUARD_CATEGORIES, LlamaGuard
from guardproxy.guards.nemoguard_jailbreak import NemoguardJailbreak
from guardproxy.guards.nemotron_content_safety import NemotronContentSafety
from guardproxy.guards.nemotron_reasoning import NemotronReasoning
from guardproxy.guards.qwen3guard import QWEN3GUARD_CATEGORIES, Qwen3Guard
from guardproxy.guards.safety_guard_8b import SafetyGuard8B
from guardproxy.guards.taxonomy import NEMOTRON_CATEGORIES, REASONING_4B_CATEGORIES
from guardproxy.guards.vllm_classify import VllmClassify


class GuardProtocol(Protocol):
    """One guard model's wire format, without the network."""

    def build_request(self, check: GuardInput) -> dict[str, Any]:
        """The full JSON body for `POST {url}/chat/completions`, `model` included."""
        ...

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict:
        """Read a decoded `chat.completion`; raises `UnparseableVerdict` outside the grammar."""
        ...


@dataclass(frozen=True, slots=True)
class GuardCapabilities:
    """What a model can be told. Suppression always works: an `allow` category is ignored
    by the decision even where the model cannot be told to skip it."""

    categories: tuple[str, ...]  # the names its verdicts use, in the shared vocabulary
    custom_categories: bool = True
    rules: bool = True
    policy_modes: frozenset[PolicyMode] = frozenset({"taxonomy"})


# Text classifiers: their own path, and long texts in segments (guards/classifier.py).
CLASSIFIER_PROTOCOLS: dict[str, Callable[[GuardSettings], ClassifierProtocol]] = {
    "vllm-classify": VllmClassify,
    "nemoguard-jailbreak": NemoguardJailbreak,
}
GUARD_PROTOCOLS: dict[str, Callable[[GuardSettings], GuardProtocol]] = {
    **CLASSIFIER_PROTOCOLS,
    "nemotron-content-safety": NemotronContentSafety,
    "nemotron-reasoning": NemotronReasoning,
    "nemotron-safety-guard-8b": SafetyGuard8B,
    "llama-guard": LlamaGuard,
    "qwen3guard": Qwen3Guard,
    "granite-guardian": GraniteGuardian,
}
# Llama Guard, Qwen3Guard and Granite Guardian have fixed taxonomies in their templates; no
# documented way to add a category or a rule reaches them over an OpenAI-compatible server.
GUARD_CAPABILITIES: dict[str, GuardCapabilities] = {
    "nemotron-content-safety": GuardCapabilities(
        NEMOTRON_CATEGORIES, policy_modes=frozenset({"taxonomy", "policy", "separate"})
    ),
    "nemotron-reasoning": GuardCapabilities(REASONING_4B_CATEGORIES),
    "nemotron-safety-guard-8b": GuardCapabilities(NEMOTRON_CATEGORIES),
    "llama-guard": GuardCapabilities(LLAMA_GUARD_CATEGORIES, custom_categories=False, rules=False),
    "qwen3guard": GuardCapabilities(QWEN3GUARD_CATEGORIES, custom_categories=False, rules=False),
    "granite-guardian": GuardCapabilities(GRANITE_CATEGORIES, custom_categories=False, rules=False),
    # A classifier is told nothing: it answers a score. A `category:` other than its default
    # is the tenant's to list in extra_categories.
    "vllm-classify": GuardCapabilities(("Prompt Injection",), custom_categories=False, rules=False),
    "nemoguard-jailbreak": GuardCapabilities(("Jailbreak",), custom_categories=False, rules=False),
}
# Every name any guard can return: what tenant policies may give actions to, so a tenant can
# move to another guard without touching its category maps.
KNOWN_CATEGORIES: tuple[str, ...] = tuple(
    dict.fromkeys(name for caps in GUARD_CAPABILITIES.values() for name in caps.categories)
)


@functools.lru_cache(maxsize=1024)
def known_names(policy: GuardPolicy) -> frozenset[str]:
    """The names a verdict under `policy` may use without being unknown (computed once per
    policy: it is asked for every verdict)."""
    custom = (name for name, _ in policy.custom)
    return frozenset((*KNOWN_CATEGORIES, *custom, *policy.extra, *policy.suppressed))


def guard_calls(check: GuardInput) -> list[GuardInput]:
    """The guard requests one check takes: two for `policy_mode: separate` with rules (the
    categories call, standard or Mode B, and a rules-only Mode A call), otherwise one."""
    policy = check.policy
    if policy.mode != "separate":
        return [check]
    calls = [replace(check, policy=policy.categories_part())]
    if policy.rules.strip():
        calls.append(replace(check, policy=policy.rules_part()))
    return calls
