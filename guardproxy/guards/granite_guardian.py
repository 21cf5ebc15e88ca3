"""IBM Granite Guardian 3.3: plain chat turns plus `guardian_config` in, `<score> yes|no
</score>` out (after a `<think>` trace when `think` is on).

Wire format: guard-protocols.md §6. One call judges one criterion (the guard's `criterion`
setting, `harm` by default); `yes` means the risk is present in the last turn.
"""

from __future__ import annotations

import re
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
    wants_reasoning,
)

# Criterion -> shared category name; `harm` and its kin name no single category.
CRITERION_CATEGORY: dict[str, str] = {
    "social_bias": "Hate/Identity Hate",
    "profanity": "Profanity",
    "sexual_content": "Sexual",
    "unethical_behavior": "Immoral/Unethical",
    "violence": "Violence",
    "jailbreak": "Jailbreak",
}
GRANITE_CATEGORIES: tuple[str, ...] = tuple(CRITERION_CATEGORY.values())
PARAMS_NO_THINK = MappingProxyType({"max_tokens": 20, "temperature": 0.0})
PARAMS_THINK = MappingProxyType({"max_tokens": 1024, "temperature": 0.0})
SCORE = re.compile(r"\s*<score>\s*(?P<score>yes|no)\s*</score>\s*", re.IGNORECASE)


class GraniteGuardian:
    """`granite-guardian`: text only; the criterion travels in `chat_template_kwargs`."""

    def __init__(self, settings: GuardSettings) -> None:
        self._settings = settings

    def build_request(self, check: GuardInput) -> dict[str, Any]:
        think = wants_reasoning(check, self._settings)
        params = PARAMS_THINK if think else PARAMS_NO_THINK
        body = chat_body(self._settings, raw_turns(check, image=False), params)
        if think and "max_tokens" not in self._settings.params:
            body["max_tokens"] = self._settings.reasoning_max_tokens
        kwargs = {"guardian_config": {"criteria_id": self._settings.criterion}, "think": think}
        body["chat_template_kwargs"] = kwargs | self._settings.chat_template_kwargs
        return body

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict:
        answer = read_answer(completion)
        match = SCORE.fullmatch(answer.text)
        if match is None:
            raise UnparseableVerdict("guard answer is not <score> yes|no </score>", answer.raw)
        risky = match.group("score").lower() == "yes"
        user, response = last_turn_rating(Safety.UNSAFE if risky else Safety.SAFE, check)
        category = CRITERION_CATEGORY.get(self._settings.criterion)
        categories = (category,) if risky and category else ()
        return Verdict(user, response, categories, answer.reasoning, answer.raw)
