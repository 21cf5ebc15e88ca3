"""Qwen3Guard-Gen: plain chat turns in, `Safety:` / `Categories:` / `Refusal:` lines out.

Wire format: guard-protocols.md §6 (the Qwen3Guard README and its parsing regexes). The model
rates the last turn. `Controversial` is a third tier that the tenant maps (`controversial:
unsafe` is strict, `safe` is loose); `Refusal` is recorded for response checks.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Safety, Verdict
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.completion import (
    chat_body,
    last_turn_rating,
    raw_turns,
    read_answer,
    read_fields,
)

CATEGORY_NAMES: dict[str, str] = {
    "Violent": "Violence",
    "Non-violent Illegal Acts": "Illegal Activity",
    "Sexual Content or Sexual Acts": "Sexual",
    "PII": "PII/Privacy",
    "Suicide & Self-Harm": "Suicide and Self Harm",
    "Unethical Acts": "Immoral/Unethical",
    "Politically Sensitive Topics": "Political/Misinformation/Conspiracy",
    "Copyright Violation": "Copyright/Trademark/Plagiarism",
    "Jailbreak": "Jailbreak",  # prompt moderation only
}
QWEN3GUARD_CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(CATEGORY_NAMES.values()))
FOLDED_NAMES = {name.casefold(): shared for name, shared in CATEGORY_NAMES.items()}
DEFAULT_PARAMS = MappingProxyType({"max_tokens": 64, "temperature": 0.0})
SAFETY, CATEGORIES, REFUSAL = "Safety", "Categories", "Refusal"
TIERS = {"safe": Safety.SAFE, "unsafe": Safety.UNSAFE}
YES_NO = {"yes": True, "no": False}


class Qwen3Guard:
    """`qwen3guard`: text only (Qwen3Guard-Gen reads no images)."""

    def __init__(self, settings: GuardSettings) -> None:
        self._settings = settings

    def build_request(self, check: GuardInput) -> dict[str, Any]:
        return chat_body(self._settings, raw_turns(check, image=False), DEFAULT_PARAMS)

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict:
        answer = read_answer(completion)
        fields = read_fields(answer, (SAFETY, CATEGORIES, REFUSAL))
        tier = fields.get(SAFETY, "").lower()
        if tier == "controversial":
            tier = check.policy.controversial
        if tier not in TIERS:
            raise UnparseableVerdict("guard answer has no Safety: Safe|Unsafe line", answer.raw)
        user, response = last_turn_rating(TIERS[tier], check)
        refusal = fields.get(REFUSAL, "").lower()
        return Verdict(
            user,
            response,
            _categories(fields.get(CATEGORIES, "None")),
            answer.reasoning,
            answer.raw,
            refusal=YES_NO.get(refusal) if check.response is not None else None,
        )


def _categories(line: str) -> tuple[str, ...]:
    names = [part.strip() for part in line.split(",")]
    shared = (FOLDED_NAMES.get(n.casefold(), n) for n in names if n and n.lower() != "none")
    return tuple(dict.fromkeys(shared))
