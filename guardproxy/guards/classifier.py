"""What the text classifiers share: the text a check judges, its segments, and the verdict.

A classifier (Prompt Guard behind vLLM's pooling runner, NemoGuard JailbreakDetect) reads one
text and answers a score, so it judges only the check's own turn: the prompt for an input
check, the answer for an output check. It never sees an image; a check's image is not sent.
Classifiers read short inputs (Prompt Guard: 512 tokens), so a longer text is split into
overlapping segments under `max_input_chars`, all of them judged, and the text is unsafe if any
segment is: nothing is cut off.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, TypeGuard

from guardproxy.core.verdict import GuardInput, Safety, Verdict
from guardproxy.guards.completion import last_turn_rating

# Each segment repeats the last eighth of the one before, so an injection shorter than that
# (250 characters at the 2000-character default) lies whole inside one segment.
OVERLAP_DIVISOR = 8
RAW_LIMIT = 2000


class ClassifierProtocol(Protocol):
    """A classifier's wire, without the network. `build_request` segments the check's text,
    once, into one document (the cache key), `posts` gives the bodies sent for it (one batched
    request, or one per segment), `decides` whether one post's answer settles the verdict
    alone (the posts still out are then cancelled), `join` the answers as the one document
    `parse` reads."""

    path: str  # appended to the guard's `url`

    def build_request(self, check: GuardInput) -> dict[str, Any]: ...

    def posts(self, batch: dict[str, Any]) -> list[dict[str, Any]]: ...

    def decides(self, answer: dict[str, Any]) -> bool: ...

    def join(self, batch: dict[str, Any], answers: list[dict[str, Any]]) -> dict[str, Any]: ...

    def parse(self, completion: dict[str, Any], check: GuardInput) -> Verdict: ...


def judged_text(check: GuardInput) -> str:
    """The turn a check judges: the answer for an output check, else the prompt."""
    return check.prompt if check.response is None else check.response


def segments(text: str, max_chars: int) -> list[str]:
    """`text` in windows of at most `max_chars`, overlapping, covering every character."""
    if len(text) <= max_chars:
        return [text]
    step = max_chars - max_chars // OVERLAP_DIVISOR
    starts = range(0, len(text) - max_chars + step, step)
    return [text[start : start + max_chars] for start in starts]


def classifier_verdict(
    check: GuardInput, unsafe: bool, score: float, category: str, answer: dict[str, Any]
) -> Verdict:
    """The typed verdict for the judged turn; an unsafe one carries the guard's category."""
    user, response = last_turn_rating(Safety.UNSAFE if unsafe else Safety.SAFE, check)
    categories = (category,) if unsafe else ()
    raw = json.dumps(answer, ensure_ascii=False)[:RAW_LIMIT]
    return Verdict(user, response, categories, raw=raw, score=score)


def number(value: Any) -> TypeGuard[int | float]:
    """A JSON number (a bool is not one, though Python says so)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
