"""Llama-3.1-Nemotron-Safety-Guard-8B v3 / NemoGuard-8B: the Aegis 2.0 "Task:" prompt, JSON out.

Wire format: guard-protocols.md §3, template verbatim from NeMo Guardrails'
`nemotron-safety-guard-deployment.mdx` (same text in the NIM prompt-template page).
"""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Verdict
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.completion import (
    GuardAnswer,
    chat_body,
    parse_safety,
    read_answer,
    response_rating,
)
from guardproxy.guards.taxonomy import (
    NEMOTRON_CATEGORIES,
    parse_category_list,
    policy_numbering,
    render_policy,
)

PROMPT_TEMPLATE = (
    "Task: Check if there is unsafe content in the user or agent messages in the below "
    "conversation in accordance with our safety policy with the below categories. Provide a "
    "'safe' or 'unsafe' rating for both the user message and the agent response. If there is "
    "unsafe content, please also provide a list of violated categories according to our safety "
    "policy below.\n"
    "\n"
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    "{taxonomy}\n"
    "<END UNSAFE CONTENT CATEGORIES>\n"
    "\n"
    "<BEGIN CONVERSATION>\n"
    "\n"
    "{conversation}"
    "<END CONVERSATION>\n"
    "\n"
    "Provide your safety assessment for the above conversation in the below output JSON format:\n"
    '{{"User Safety": safe or unsafe rating for the user message, "Response Safety": safe or '
    "unsafe rating for the agent response. Omit if no agent response present. "
    '"Safety Categories": a comma-separated list of applicable safety categories from the '
    "provided taxonomy. Omit if all safe.}}\n"
    "\n"
    "Do not include anything other than the output JSON in your response.\n"
    "Output JSON:"
)
USER_TURN = "user: {user_input}\n\n"
# Literally "response: agent:" in NVIDIA's output-check template.
RESPONSE_TURN = "response: agent: {bot_response}\n\n"
# NVIDIA's prompts.yml sets max_tokens 50; NeMo's action forces temperature 1e-20 (actions.py).
DEFAULT_PARAMS = MappingProxyType({"max_tokens": 50, "temperature": 0.0})
USER_SAFETY = "User Safety"
RESPONSE_SAFETY = "Response Safety"
SAFETY_CATEGORIES = "Safety Categories"
KEYS = frozenset({USER_SAFETY, RESPONSE_SAFETY, SAFETY_CATEGORIES})


def render_prompt(user_input: str, bot_response: str | None, taxonomy_text: str) -> str:
    """NVIDIA's user message; `bot_response=None` is an input check (no agent turn)."""
    conversation = USER_TURN.format(user_input=user_input)
    if bot_response is not None:
        conversation += RESPONSE_TURN.format(bot_response=bot_response)
    return PROMPT_TEMPLATE.format(taxonomy=taxonomy_text, conversation=conversation)


class SafetyGuard8B:
    """`nemotron-safety-guard-8b`: text only; `check.image_url` is ignored (Llama-3.1 base)."""

    def __init__(self, settings: GuardSettings) -> None:
        self._settings = settings

    def build_request(self, check: GuardInput) -> dict[str, Any]:
        # The 8B guards take "Input Types: Text" only, so an image is never sent.
        taxonomy, _ = render_policy(NEMOTRON_CATEGORIES, check.policy)
        text = render_prompt(check.prompt, check.response, taxonomy)
        body = chat_body(self._settings, [{"role": "user", "content": text}], DEFAULT_PARAMS)
        if self._settings.chat_template_kwargs:
            body["chat_template_kwargs"] = dict(self._settings.chat_template_kwargs)
        return body

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict:
        answer = read_answer(completion)
        fields = _json_fields(answer)
        if USER_SAFETY not in fields:
            raise UnparseableVerdict(f"guard answer has no {USER_SAFETY!r}", answer.raw)
        response = fields.get(RESPONSE_SAFETY)
        rating = None if response is None else parse_safety(response, answer.raw)
        categories = fields.get(SAFETY_CATEGORIES, "")
        return Verdict(
            user=parse_safety(fields[USER_SAFETY], answer.raw),
            response=response_rating(rating, check, RESPONSE_SAFETY, answer.raw),
            categories=parse_category_list(categories, self._numbering(check)),
            reasoning=answer.reasoning,
            raw=answer.raw,
        )

    @staticmethod
    def _numbering(check: GuardInput) -> tuple[str, ...]:
        return policy_numbering(NEMOTRON_CATEGORIES, check.policy)


def _json_fields(answer: GuardAnswer) -> dict[str, str]:
    """The answer as one JSON object of known keys with string values, else unparseable."""
    try:
        document = json.loads(answer.text, object_pairs_hook=_unique_keys)
    except ValueError as exc:
        raise UnparseableVerdict("guard answer is not JSON", answer.raw) from exc
    if not isinstance(document, dict):
        raise UnparseableVerdict("guard answer is not a JSON object", answer.raw)
    unknown = sorted(set(document) - KEYS)
    if unknown:
        raise UnparseableVerdict(f"guard answer has unknown keys {unknown}", answer.raw)
    if not all(isinstance(value, str) for value in document.values()):
        raise UnparseableVerdict("guard answer has a non-string value", answer.raw)
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads would keep the last of two equal keys; a repeated verdict is ambiguous.
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("repeated key")
    return dict(pairs)
