"""Applying a tenant's redaction to what crosses the proxy: request messages and answers.

Detection itself lives in `guardproxy.redaction`; this module decides what is masked where.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

from guardproxy.core.conversation import Conversation, Location
from guardproxy.policy.model import RedactionPolicy
from guardproxy.redaction import CATEGORY_DETECTORS, DETECTORS, Redactor, StreamRedactor
from guardproxy.redaction.redactor import CountingRedactor


@dataclass(frozen=True)
class Masker:
    """A tenant's redaction: the detectors it always runs, plus any a category asks for."""

    redactor: Redactor
    always: frozenset[str]

    @classmethod
    def for_policy(cls, policy: RedactionPolicy) -> Masker:
        """The policy's detectors, patterns and words run always, in every mode: `monitor`
        relaxes decisions, never data protection."""
        redactor = Redactor(
            detectors=sorted(DETECTORS),
            patterns=[(p.name, p.regex) for p in policy.patterns],
            words=[(w.name, w.words) for w in policy.words],
            placeholder=policy.placeholder,
        )
        names = {
            *policy.detectors,
            *(p.name for p in policy.patterns),
            *(w.name for w in policy.words),
        }
        return cls(redactor, frozenset(names))

    def counting(self, tally: Counter[str]) -> Masker:
        """This masker for one request and direction: each masked span is counted by type."""
        return replace(self, redactor=CountingRedactor(self.redactor, tally))

    def types_for(self, categories: Collection[str]) -> frozenset[str]:
        """The always-on detectors plus those that belong to `categories` (e.g. PII/Privacy)."""
        extra = {d for c in categories for d in CATEGORY_DETECTORS.get(c, ())}
        return self.always | extra

    def mask(self, text: str, types: Collection[str]) -> tuple[str, int]:
        if not types or not text:
            return text, 0
        masked, spans = self.redactor.redact(text, types)
        return masked, len(spans)

    def stream(self, types: Collection[str]) -> StreamRedactor | None:
        return StreamRedactor(self.redactor, types) if types else None


def mask_locations(
    request: Conversation, locations: Sequence[Location], masker: Masker, types: Collection[str]
) -> tuple[bytes, int]:
    """The request body with every string at (or under) `locations` masked, and how many
    spans were. A codec names where its judged text sits; with nothing found the client's
    bytes are returned untouched."""
    if not types or not locations:
        return request.raw, 0
    body, found = json.loads(request.raw), 0  # a copy to write into
    for location in locations:
        *parents, last = location
        holder = body
        for step in parents:
            holder = holder[step]
        holder[last], count = mask_strings(holder[last], masker, types)
        found += count
    if not found:
        return request.raw, 0
    return json.dumps(body, ensure_ascii=False).encode(), found


# Fields of a wire part that are identifiers, media or metadata, never text a reader sees.
NOT_TEXT_KEYS = frozenset(
    {
        "type",
        "id",
        "call_id",
        "item_id",
        "tool_use_id",
        "status",
        "role",
        "name",
        "url",
        "image_url",
        "source",
        "data",
        "media_type",
        "file_id",
        "file_data",
        "file_url",
        "logprobs",
        "annotations",
        "signature",
        "cache_control",
        "detail",
    }
)


def mask_strings(value: Any, masker: Masker, types: Collection[str]) -> tuple[Any, int]:
    """Every string in `value` (a string, or nested lists and objects) masked, except
    identifiers and media (`NOT_TEXT_KEYS`); keys kept, so a tool call's JSON arguments stay
    valid JSON."""
    if isinstance(value, str):
        return masker.mask(value, types)
    if isinstance(value, list):
        items = [mask_strings(item, masker, types) for item in value]
        return [item for item, _ in items], sum(count for _, count in items)
    if isinstance(value, dict):
        pairs = {
            key: (item, 0) if key in NOT_TEXT_KEYS else mask_strings(item, masker, types)
            for key, item in value.items()
        }
        return {key: item for key, (item, _) in pairs.items()}, sum(c for _, c in pairs.values())
    return value, 0


class LocatedMasking:
    """For codecs that record where their judged strings sit (`Conversation.texts`): the
    request is masked there, and one stream is one answer."""

    def mask_request(
        self, request: Conversation, masker: Masker, types: Collection[str]
    ) -> tuple[bytes, int]:
        return mask_locations(request, request.texts, masker, types)

    def buffers_streams(self, request: Conversation) -> bool:
        return False
