"""Nemotron-Content-Safety-Reasoning-4B: NVIDIA's prompt in one user turn, `Prompt harm:` out.

Wire format: guard-protocols.md §1. The template is the Hugging Face "Recommended Prompt
Template" as NVIDIA reproduces it in NeMo Guardrails'
`nemotron-content-safety-reasoning-deployment.mdx`; reasoning is switched by a literal
`/think` or `/no_think` at the end of the user message.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Literal

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Safety, Verdict
from guardproxy.errors import UnparseableVerdict
from guardproxy.guards.completion import (
    GuardAnswer,
    chat_body,
    read_answer,
    read_fields,
    response_rating,
    wants_reasoning,
)
from guardproxy.guards.taxonomy import REASONING_4B_CATEGORIES, render_policy

ThinkToggle = Literal["newline", "same_line"]

# Verbatim, including the line break inside "the request and\nresponse." (§1.1).
PROMPT_TEMPLATE = (
    "You are a classifier for analyzing interactions between humans and LLMs. Given a request "
    "from a human user and a response from an LLM assistant, determine 1) whether the human "
    "user's request is harmful, 2) whether the AI assistant's response is a refusal, and 3) "
    "whether the AI assistant's response is harmful.\n"
    "Taxonomy: The following are the list of harmful categories that the prompt and response "
    "may fall into.\n"
    "\n"
    "{taxonomy}\n"
    "\n"
    "Human user:\n"
    "{user_input}\n"
    "\n"
    "AI assistant:\n"
    "{bot_response}\n"
    "\n"
    "Use the taxonomy to determine if the prompt and response fall into any of the harmful "
    "categories. Output your answer in the following format:\n"
    "\n"
    '"Prompt harm: <harmful/unharmful>\n'
    'Response harm: <harmful/unharmful>"\n'
    "\n"
    "Only output the answer in the format specified above after thinking about the request and\n"
    'response. If there is no response, output "Response harm: <harmful/unharmful>" as None.'
)
# NVIDIA writes "None" under "AI assistant:" for a prompt-only check (NeMo content_safety_reasoning
# example prompts.yml).
NO_RESPONSE = "None"
# Where the toggle goes is UNCONFIRMED (§1.1): NVIDIA's tutorial puts it on its own line, the
# NeMo example config after a space on the last line.
TOGGLE_SEPARATORS: MappingProxyType[ThinkToggle, str] = MappingProxyType(
    {"newline": "\n", "same_line": " "}
)
# NVIDIA's prompts.yml uses max_tokens 400; NeMo's docs suggest 2048 for reasoning guards so the
# trace is not cut off. Temperature ~0 because NeMo's content-safety action forces
# `temperature: 1e-20` on every guard call (nemoguardrails/library/content_safety/actions.py).
PARAMS_NO_THINK = MappingProxyType({"max_tokens": 400, "temperature": 0.0})
PARAMS_THINK = MappingProxyType({"max_tokens": 2048, "temperature": 0.0})
PROMPT_HARM = "Prompt harm"
RESPONSE_HARM = "Response harm"
HARM_VALUES: MappingProxyType[str, Safety | None] = MappingProxyType(
    {"harmful": Safety.UNSAFE, "unharmful": Safety.SAFE, "none": None}
)


def render_prompt(
    user_input: str,
    bot_response: str | None,
    taxonomy_text: str,
    think: bool,
    toggle: ThinkToggle = "newline",
) -> str:
    """NVIDIA's user message; `bot_response=None` is an input check ("None" in the template)."""
    prompt = PROMPT_TEMPLATE.format(
        taxonomy=taxonomy_text,
        user_input=user_input,
        bot_response=NO_RESPONSE if bot_response is None else bot_response,
    )
    return prompt + TOGGLE_SEPARATORS[toggle] + ("/think" if think else "/no_think")


class NemotronReasoning:
    """`nemotron-reasoning`: text only; judges the prompt and, on output checks, the answer."""

    def __init__(self, settings: GuardSettings) -> None:
        self._settings = settings

    def build_request(self, check: GuardInput) -> dict[str, Any]:
        think = wants_reasoning(check, self._settings)
        # The taxonomy block is where NVIDIA puts a custom policy for this model (§1.2).
        taxonomy, _ = render_policy(REASONING_4B_CATEGORIES, check.policy)
        text = render_prompt(
            check.prompt, check.response, taxonomy, think, self._settings.think_toggle
        )
        messages: list[dict[str, Any]] = [{"role": "user", "content": text}]
        body = chat_body(self._settings, messages, PARAMS_THINK if think else PARAMS_NO_THINK)
        if self._settings.chat_template_kwargs:
            body["chat_template_kwargs"] = dict(self._settings.chat_template_kwargs)
        return body

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict:
        answer = read_answer(completion)
        fields = read_fields(answer, (PROMPT_HARM, RESPONSE_HARM))
        if PROMPT_HARM not in fields:
            raise UnparseableVerdict(f"guard answer has no {PROMPT_HARM!r} line", answer.raw)
        user = _harm(fields[PROMPT_HARM], answer)
        if user is None:
            raise UnparseableVerdict(f"{PROMPT_HARM!r} must be harmful or unharmful", answer.raw)
        response = _harm(fields.get(RESPONSE_HARM, NO_RESPONSE), answer)
        return Verdict(
            user=user,
            response=response_rating(response, check, RESPONSE_HARM, answer.raw),
            reasoning=answer.reasoning,
            raw=answer.raw,
        )


def _harm(value: str, answer: GuardAnswer) -> Safety | None:
    """`harmful` / `unharmful` / `None`, in any case (the model writes both `harm` and `Harm`)."""
    folded = value.lower()
    if folded not in HARM_VALUES:
        raise UnparseableVerdict(f"not a harm rating: {value[:40]!r}", answer.raw)
    return HARM_VALUES[folded]
