"""Llama Guard 3 and 4: plain chat turns in (the model's template holds the task and S1-S14),
`safe` or `unsafe` plus a line of codes out.

Wire format: guard-protocols.md §6 (Llama Guard 3 and 4 model cards, llama-recipes
`PROMPT_TEMPLATE_3`). The model rates only the last turn it is sent. Its codes are mapped onto
the shared category names, so a tenant's category actions mean the same on every guard.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Safety, Verdict
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.completion import chat_body, last_turn_rating, raw_turns, read_answer

# S-code -> shared name (card name in the comment). Defamation has no Aegis counterpart.
CODES: dict[str, str] = {
    "S1": "Violence",  # Violent Crimes
    "S2": "Criminal Planning/Confessions",  # Non-Violent Crimes
    "S3": "Sexual",  # Sex-Related Crimes
    "S4": "Sexual (minor)",  # Child Sexual Exploitation
    "S5": "Defamation",
    "S6": "Unauthorized Advice",  # Specialized Advice
    "S7": "PII/Privacy",  # Privacy
    "S8": "Copyright/Trademark/Plagiarism",  # Intellectual Property
    "S9": "Guns and Illegal Weapons",  # Indiscriminate Weapons
    "S10": "Hate/Identity Hate",  # Hate
    "S11": "Suicide and Self Harm",  # Suicide & Self-Harm
    "S12": "Sexual",  # Sexual Content
    "S13": "Political/Misinformation/Conspiracy",  # Elections
    "S14": "Malware",  # Code Interpreter Abuse
}
LLAMA_GUARD_CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(CODES.values()))
# The first token carries the verdict; 20 tokens hold `unsafe` and every code.
DEFAULT_PARAMS = MappingProxyType({"max_tokens": 20, "temperature": 0.0})
CODE_LIST = re.compile(r"S\d{1,2}(\s*,\s*S\d{1,2})*")


class LlamaGuard:
    """`llama-guard`: the conversation as it is; images as parts (Llama Guard 4 sees them)."""

    def __init__(self, settings: GuardSettings) -> None:
        self._settings = settings

    def build_request(self, check: GuardInput) -> dict[str, Any]:
        return chat_body(self._settings, raw_turns(check), DEFAULT_PARAMS)

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict:
        answer = read_answer(completion)
        lines = [line.strip() for line in answer.text.strip().splitlines() if line.strip()]
        rating = lines[0].lower() if lines else ""
        if rating == "safe" and len(lines) == 1:
            categories: tuple[str, ...] = ()
        elif rating == "unsafe" and len(lines) <= 2:
            categories = _categories(lines[1] if len(lines) == 2 else "", answer.raw)
        else:
            raise UnparseableVerdict("not a Llama Guard verdict", answer.raw)
        user, response = last_turn_rating(Safety(rating), check)
        return Verdict(user, response, categories, answer.reasoning, answer.raw)


def _categories(line: str, raw: str) -> tuple[str, ...]:
    if not line:
        return ()
    if not CODE_LIST.fullmatch(line):
        raise UnparseableVerdict("Llama Guard categories line is not a list of codes", raw)
    codes = [code.strip().upper() for code in line.split(",")]
    # An unknown code is kept as it is: it takes the direction's default action.
    return tuple(dict.fromkeys(CODES.get(code, code) for code in codes))
