"""Nemotron-3 / 3.5 Content Safety: raw chat turns in, `User Safety: ...` lines out.

Wire format: nemotron-3.5-v1.1.md §2 (NVIDIA's v1.1 cookbooks, NeMo Guardrails 0.25), which
supersedes guard-protocols.md §2.3. The chat template supplies the task and the S1..S24
taxonomy, so no system message and no instruction text are sent. A tenant's policy travels in
one of the two documented, mutually exclusive kwargs: `custom_taxonomy` (Mode B, a category
list) or `custom_policy` (Mode A, free text that replaces the built-in behaviour).
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, GuardPolicy, Safety, Verdict
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.completion import (
    GuardAnswer,
    chat_body,
    parse_safety,
    read_answer,
    read_fields,
    response_rating,
    wants_reasoning,
)
from guardproxy.guards.taxonomy import (
    NEMOTRON_CATEGORIES,
    parse_category_list,
    render_custom_policy,
    render_custom_taxonomy,
)

# NVIDIA's 3.5 cookbooks: temperature 0; 64-128 tokens without a trace, 1024 with one.
DEFAULT_PARAMS = MappingProxyType({"max_tokens": 128, "temperature": 0})
USER_SAFETY = "User Safety"
RESPONSE_SAFETY = "Response Safety"
SAFETY_CATEGORIES = "Safety Categories"
FIELDS = (USER_SAFETY, RESPONSE_SAFETY, SAFETY_CATEGORIES)
CUSTOM_TAXONOMY = "custom_taxonomy"
CUSTOM_POLICY = "custom_policy"
POLICY_KWARGS = (CUSTOM_TAXONOMY, CUSTOM_POLICY)
# How the template renders the judged answer; SGLang needs it folded into the user text
# because its chat endpoint refuses a conversation that ends on an assistant turn [CB-sglang].
ANSWER_WRAPPER = "\nresponse: agent:  ### Answer: "


class NemotronContentSafety:
    """`nemotron-content-safety`: text plus at most one image, optionally the answer to judge."""

    def __init__(self, settings: GuardSettings) -> None:
        self._settings = settings

    def build_request(self, check: GuardInput) -> dict[str, Any]:
        reasoning = wants_reasoning(check, self._settings)
        body = chat_body(self._settings, self._messages(check), DEFAULT_PARAMS)
        if reasoning and "max_tokens" not in self._settings.params:
            body["max_tokens"] = self._settings.reasoning_max_tokens
        body["chat_template_kwargs"] = self._template_kwargs(check.policy, reasoning)
        return body

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict:
        answer = read_answer(completion)
        fields = read_fields(answer, FIELDS)
        if USER_SAFETY not in fields:
            raise UnparseableVerdict(f"guard answer has no {USER_SAFETY!r} line", answer.raw)
        listed = (*(name for name, _ in check.policy.custom), *check.policy.extra)
        categories = parse_category_list(
            fields.get(SAFETY_CATEGORIES, ""), NEMOTRON_CATEGORIES, listed
        )
        verdict = Verdict(
            user=parse_safety(fields[USER_SAFETY], answer.raw),
            response=_response_safety(fields, check, answer),
            categories=categories,
            reasoning=answer.reasoning,
            raw=answer.raw,
            mode=None if check.policy.is_default else check.policy.mode,
        )
        # Mode A may answer without categories (§3 item 1): that is the policy speaking.
        violation = check.policy.mode == "policy" and not categories
        return verdict if not violation else _policy_violation(verdict, check)

    def _template_kwargs(self, policy: GuardPolicy, reasoning: bool) -> dict[str, Any]:
        categories = "/categories" if self._settings.request_categories else "/no_categories"
        kwargs: dict[str, Any] = {"enable_thinking": reasoning, "request_categories": categories}
        if not policy.is_default:
            kwargs |= {POLICY_KWARG[policy.mode]: _policy_text(policy)}
        return kwargs | self._settings.chat_template_kwargs

    def _messages(self, check: GuardInput) -> list[dict[str, Any]]:
        if check.response is not None and self._settings.response_in_user_turn:
            folded = GuardInput(check.prompt + ANSWER_WRAPPER + check.response, check.image_url)
            return [{"role": "user", "content": _user_content(folded)}]
        messages: list[dict[str, Any]] = [{"role": "user", "content": _user_content(check)}]
        if check.response is not None:
            # The assistant turn is what makes the model rate the response at all.
            messages.append({"role": "assistant", "content": check.response})
        return messages


POLICY_KWARG = {"taxonomy": CUSTOM_TAXONOMY, "policy": CUSTOM_POLICY}


def _policy_text(policy: GuardPolicy) -> str:
    if policy.mode == "policy":
        return render_custom_policy(NEMOTRON_CATEGORIES, policy)
    return render_custom_taxonomy(NEMOTRON_CATEGORIES, policy)


def _policy_violation(verdict: Verdict, check: GuardInput) -> Verdict:
    return replace(verdict, policy_violation=verdict.is_unsafe(check.direction))


def _user_content(check: GuardInput) -> str | list[dict[str, Any]]:
    if check.image_url is None:
        return check.prompt
    # Image part first, as in NVIDIA's example; the model accepts at most one image.
    return [
        {"type": "image_url", "image_url": {"url": check.image_url}},
        {"type": "text", "text": check.prompt},
    ]


def _response_safety(
    fields: dict[str, str], check: GuardInput, answer: GuardAnswer
) -> Safety | None:
    value = fields.get(RESPONSE_SAFETY)
    rating = None if value is None else parse_safety(value, answer.raw)
    return response_rating(rating, check, RESPONSE_SAFETY, answer.raw)
