"""The one typed result every guard protocol produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

# How the tenant's policy reaches a guard that has two channels (Nemotron 3.5, v1.1):
# taxonomy: one call, categories and rules in `custom_taxonomy` (Mode B);
# policy: one call, everything as `custom_policy` free text (Mode A);
# separate: the categories call and a rules-only Mode A call, in parallel.
PolicyMode = Literal["taxonomy", "policy", "separate"]


class Safety(StrEnum):
    SAFE = "safe"
    UNSAFE = "unsafe"


class Direction(StrEnum):
    """Which turn a check judges: the user's prompt, or the model's response to it."""

    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    """The tenant's policy as the guard model is shown it, whatever the protocol.

    Each protocol renders it its own way: its base taxonomy minus `suppressed` (the original
    S-numbers are kept, so codes the model returns still mean what they meant), then `custom`
    categories numbered after it, then `rules` in natural language. `extra` names built-in
    categories the proxy does not know but the tenant expects (listed with the kept ones).
    """

    suppressed: frozenset[str] = frozenset()
    custom: tuple[tuple[str, str], ...] = ()  # (name, description)
    rules: str = ""
    mode: PolicyMode = "taxonomy"
    extra: tuple[str, ...] = ()
    lists_categories: bool = True  # False: a rules-only call (the second call of `separate`)
    controversial: Literal["unsafe", "safe"] = "unsafe"  # Qwen3Guard's third tier

    @property
    def is_default(self) -> bool:
        return not (self.suppressed or self.custom or self.rules)

    def categories_part(self) -> GuardPolicy:
        """The category side alone (the first call of `separate`)."""
        return GuardPolicy(self.suppressed, self.custom, "", "taxonomy", self.extra)

    def rules_part(self) -> GuardPolicy:
        """The natural-language rules alone, as Mode A free text (the second call)."""
        return GuardPolicy(rules=self.rules, mode="policy", lists_categories=False)


DEFAULT_POLICY = GuardPolicy()


@dataclass(frozen=True, slots=True)
class GuardInput:
    """What a guard judges: a prompt, at most one image, and optionally a response in context."""

    prompt: str
    image_url: str | None = None
    response: str | None = None
    reasoning: bool | None = None  # None: the guard's configured default
    policy: GuardPolicy = DEFAULT_POLICY

    @property
    def direction(self) -> Direction:
        return Direction.INPUT if self.response is None else Direction.OUTPUT


@dataclass(frozen=True, slots=True)
class Verdict:
    """A guard's answer. `user`/`response` are None where the model did not rate that turn.

    `policy_violation`: the tenant's natural-language policy (a Mode A call) judged the
    checked turn unsafe without naming categories; the tenant's `policy_action` applies.
    `calls` holds the answers a verdict was combined from (`policy_mode: separate`).
    """

    user: Safety | None
    response: Safety | None = None
    categories: tuple[str, ...] = ()
    reasoning: str | None = None
    raw: str = field(default="", repr=False)
    policy_violation: bool = False
    reasoning_unavailable: bool = False  # a trace was asked for and none came back
    refusal: bool | None = None  # Qwen3Guard: whether the judged response is a refusal
    mode: PolicyMode | None = None  # the delivery mode of the call that produced it
    calls: tuple[Verdict, ...] = ()
    cached: bool = False  # served from the verdict cache, not by a guard call
    prompt_tokens: int | None = None  # the guard's `usage.prompt_tokens`, where it says
    score: float | None = None  # a classifier's score: the highest of a text's segments

    def safety(self, direction: Direction) -> Safety | None:
        return self.user if direction is Direction.INPUT else self.response

    def is_unsafe(self, direction: Direction) -> bool:
        return self.safety(direction) is Safety.UNSAFE


def worst(*ratings: Safety | None) -> Safety | None:
    """Unsafe if any rating is; None only if no call rated the turn."""
    known = [r for r in ratings if r is not None]
    return None if not known else Safety.UNSAFE if Safety.UNSAFE in known else Safety.SAFE


def combine_separate(categories: Verdict, rules: Verdict, direction: Direction) -> Verdict:
    """The two answers of `policy_mode: separate` as one: unsafe if either is; category
    actions come from the categories call, `policy_action` from the rules call."""
    traces = [v.reasoning for v in (categories, rules) if v.reasoning]
    return Verdict(
        user=worst(categories.user, rules.user),
        response=worst(categories.response, rules.response),
        categories=categories.categories if categories.is_unsafe(direction) else (),
        reasoning="\n\n".join(traces) or None,
        raw=f"{categories.raw}\n---\n{rules.raw}",
        policy_violation=rules.is_unsafe(direction),
        reasoning_unavailable=categories.reasoning_unavailable or rules.reasoning_unavailable,
        mode="separate",
        calls=(categories, rules),
    )
