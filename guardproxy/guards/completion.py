"""Shared pieces of the guard protocols: the request body, and reading the chat completion back.

Every reader fails closed: anything outside the documented shape is `UnparseableVerdict`, which
the proxy handles like an outage, never as "safe".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Safety
from guardproxy.errors import UnparseableVerdict

THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
THINK_TAG = re.compile(r"</?think>")
# vLLM's reasoning parsers move the trace out of `content` into one of these message fields.
REASONING_FIELDS = ("reasoning_content", "reasoning")
FIELD_LINE = re.compile(r"\s*(?P<key>[^:]*?)\s*:\s*(?P<value>.*?)\s*")


@dataclass(frozen=True, slots=True)
class GuardAnswer:
    """The guard's text with the reasoning trace taken out; `raw` is `content` as returned."""

    text: str
    reasoning: str | None
    raw: str


def wants_reasoning(check: GuardInput, settings: GuardSettings) -> bool:
    return settings.reasoning if check.reasoning is None else check.reasoning


def chat_body(
    settings: GuardSettings, messages: list[dict[str, Any]], defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """The POST body: model and messages, then sampling defaults overridden by `settings.params`."""
    return {"model": settings.model, "messages": messages, **defaults, **settings.params}


def read_answer(completion: dict[str, Any]) -> GuardAnswer:
    """`choices[0]` of a chat completion, checked and split into verdict text and reasoning."""
    choice = _first_choice(completion)
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UnparseableVerdict("guard answer has no message")
    content = message.get("content")
    raw = content if isinstance(content, str) else ""
    if choice.get("finish_reason") == "length":
        # NeMo Guardrails treats a budget-exhausted guard answer as unsafe (content-safety.mdx).
        raise UnparseableVerdict("guard answer truncated (finish_reason=length)", raw=raw)
    if not raw.strip():
        raise UnparseableVerdict("guard answer has no content", raw=raw)
    text, trace = _split_think(raw)
    return GuardAnswer(text=text, reasoning=trace or _reasoning_field(message), raw=raw)


def prompt_tokens(completion: dict[str, Any]) -> int | None:
    """`usage.prompt_tokens` (vLLM: the rendered prompt's tokens), None where not given."""
    usage = completion.get("usage")
    count = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def read_fields(answer: GuardAnswer, keys: Sequence[str]) -> dict[str, str]:
    """Every non-blank line must be `<key>: <value>` with a known key, at most once each.

    Keys match case-insensitively and come back spelled as in `keys`; values are trimmed.
    """
    by_folded = {key.casefold(): key for key in keys}
    fields: dict[str, str] = {}
    for number, line in enumerate(answer.text.splitlines(), start=1):
        if not line.strip():
            continue
        match = FIELD_LINE.fullmatch(line)
        key = by_folded.get(match.group("key").casefold()) if match else None
        if match is None or key is None:
            # The line itself stays in `.raw` only: it may echo the prompt.
            raise UnparseableVerdict(f"unexpected line {number} in guard answer", answer.raw)
        if key in fields:
            raise UnparseableVerdict(f"guard answer repeats {key!r}", answer.raw)
        fields[key] = match.group("value")
    return fields


def parse_safety(value: str, raw: str) -> Safety:
    """`safe` or `unsafe`, in any case; anything else is unparseable."""
    try:
        return Safety(value.lower())
    except ValueError:
        raise UnparseableVerdict(f"not a safety rating: {value[:40]!r}", raw) from None


def response_rating(rating: Safety | None, check: GuardInput, key: str, raw: str) -> Safety | None:
    """The response verdict: required on an output check, ignored on an input check."""
    if check.response is None:
        # A (well-formed) response rating on an input check rates a turn that was never sent.
        # It is ignored, not failed: the user verdict beside it is unambiguous.
        return None
    if rating is None:
        # Never inferred from the user rating (NeMo: "never falls back to `User Safety`").
        raise UnparseableVerdict(f"guard answer does not rate the response ({key!r})", raw)
    return rating


def raw_turns(check: GuardInput, image: bool = True) -> list[dict[str, Any]]:
    """The check as plain chat turns, for guards whose own template builds the prompt: the
    user turn (image part first, if any and if the model sees images), then the answer."""
    content: str | list[dict[str, Any]] = check.prompt
    if image and check.image_url is not None:
        content = [
            {"type": "image_url", "image_url": {"url": check.image_url}},
            {"type": "text", "text": check.prompt},
        ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if check.response is not None:
        messages.append({"role": "assistant", "content": check.response})
    return messages


def last_turn_rating(rating: Safety, check: GuardInput) -> tuple[Safety | None, Safety | None]:
    """(user, response) for a guard that rates only the last turn it was sent."""
    return (rating, None) if check.response is None else (None, rating)


def _first_choice(completion: dict[str, Any]) -> dict[str, Any]:
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UnparseableVerdict("guard answer has no choices")
    return choices[0]


def _split_think(content: str) -> tuple[str, str | None]:
    """Take out one leading `<think>...</think>` block; any other think tag is unparseable."""
    match = THINK_BLOCK.search(content)
    if match is not None and content[: match.start()].strip():
        raise UnparseableVerdict("guard answer has text before its <think> block", content)
    text = content[match.end() :] if match else content
    if THINK_TAG.search(text):
        raise UnparseableVerdict("guard answer has an unterminated or extra think tag", content)
    trace = match.group(1).strip() if match else None
    return text, trace or None


def _reasoning_field(message: dict[str, Any]) -> str | None:
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None
