"""Running a guard over one direction of an exchange: the input turn, or the answer in context."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from guardproxy.api.conversation import Turn
from guardproxy.errors import GuardError, GuardOverloaded
from guardproxy.guards.protocols import known_names
from guardproxy.media.request import GuardImage
from guardproxy.policy.profile import DirectionRules
from guardproxy.verdict import GuardInput, Safety, Verdict


class Guard(Protocol):
    """The guard seam: (prompt, image, response) in, typed verdict out."""

    async def classify(self, check: GuardInput) -> Verdict: ...


class CheckStatus(StrEnum):
    PENDING = "pending"  # checked as the answer streams; the audit record has the outcome
    SAFE = "safe"
    UNSAFE = "unsafe"
    ERROR = "error"  # the guard gave no usable verdict
    OFF = "off"  # the tenant turned this check off
    SKIPPED = "skipped"  # nothing to judge, or an earlier step already decided


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: CheckStatus
    categories: tuple[str, ...] = ()
    reasoning: tuple[str, ...] = ()
    error: str | None = None
    latency_ms: float | None = None
    verdicts: tuple[Verdict, ...] = field(default=(), repr=False)
    parts: tuple[dict[str, object], ...] = ()  # per image or video frame, when several
    policy_violation: bool = False  # the natural-language policy (Mode A) judged it unsafe
    unknown_categories: tuple[str, ...] = ()  # named by the guard, known to no taxonomy here
    # Output checks: Nemotron shares one categories line between both turns, so where the
    # prompt was unsafe too these may be the prompt's (nemotron-3.5-v1.1.md §2.3).
    shared_with_prompt: tuple[str, ...] = ()
    overloaded: bool = False  # no verdict because the guard shed the call (never allowed)

    def summary(self, reasoning: bool = False, detail: bool = False) -> dict[str, object]:
        """The check as the client and the audit log see it (never the raw guard output).
        `detail` (the audit) adds why a guard failed: its name and connection error stay out
        of what the client sees."""
        result: dict[str, object] = {"status": self.status.value}
        if reasoning and self.reasoning:
            result["reasoning"] = list(self.reasoning)
        elif reasoning and any(v.reasoning_unavailable for v in self.verdicts):
            result["reasoning"] = "unavailable"
        if self.categories:
            result["categories"] = list(self.categories)
        result |= self._details()
        if self.error and detail:
            result["error"] = self.error
        if self.latency_ms is not None:
            result["latency_ms"] = round(self.latency_ms, 2)
        if self.verdicts:
            calls = [c for v in self.verdicts for c in (v.calls or (v,))]
            result["guard_calls"] = sum(not c.cached for c in calls)
            if any(c.cached for c in calls):
                result["cached"] = sum(c.cached for c in calls)
        if self.parts:
            result["parts"] = list(self.parts)
        return result

    def _details(self) -> dict[str, object]:
        details: dict[str, object] = {}
        if self.policy_violation:
            details["policy"] = "violated"
        if self.unknown_categories:
            details["unknown_categories"] = list(self.unknown_categories)
        if self.shared_with_prompt:
            details["categories_may_be_the_prompts"] = list(self.shared_with_prompt)
        refusals = [v.refusal for v in self.verdicts if v.refusal is not None]
        if refusals:
            details["refusal"] = any(refusals)
        calls = [call for v in self.verdicts for call in v.calls]
        if calls:
            details["calls"] = [_call_summary(call) for call in calls]
        return details

    def merge(self, other: CheckResult) -> CheckResult:
        """Two checks of one direction as one: the worse status, everything else combined."""
        status = max(self.status, other.status, key=STATUS_SEVERITY.index)
        latencies = [x for x in (self.latency_ms, other.latency_ms) if x is not None]
        return CheckResult(
            status,
            tuple(dict.fromkeys((*self.categories, *other.categories))),
            self.reasoning + other.reasoning,
            self.error or other.error,
            sum(latencies) if latencies else None,
            self.verdicts + other.verdicts,
            self.parts + other.parts,
            self.policy_violation or other.policy_violation,
            tuple(dict.fromkeys((*self.unknown_categories, *other.unknown_categories))),
            tuple(dict.fromkeys((*self.shared_with_prompt, *other.shared_with_prompt))),
            self.overloaded or other.overloaded,
        )


def _call_summary(call: Verdict) -> dict[str, object]:
    """One of the calls a verdict was combined from, for the audit."""
    summary: dict[str, object] = {"mode": call.mode or "standard"}
    for turn, rating in (("user", call.user), ("response", call.response)):
        summary[turn] = rating.value if rating is not None else "unrated"
    if call.categories:
        summary["categories"] = list(call.categories)
    return summary


STATUS_SEVERITY = [
    CheckStatus.PENDING,
    CheckStatus.OFF,
    CheckStatus.SKIPPED,
    CheckStatus.SAFE,
    CheckStatus.ERROR,
    CheckStatus.UNSAFE,
]
PENDING = CheckResult(CheckStatus.PENDING)


OFF = CheckResult(CheckStatus.OFF)
SKIPPED = CheckResult(CheckStatus.SKIPPED)


def input_checks(prompt: str, images: list[GuardImage], rules: DirectionRules) -> list[GuardInput]:
    """The models take one image per call, so a turn with several images (or video frames) is
    judged once per image, each with the text."""
    policy, reasoning = rules.guard_policy, rules.reasoning
    if not images:
        return [GuardInput(prompt, reasoning=reasoning, policy=policy)] if prompt.strip() else []
    return [GuardInput(prompt, image.url, None, reasoning, policy) for image in images]


def conversation_checks(
    prompt: str, images: list[GuardImage], turns: Sequence[Turn], rules: DirectionRules
) -> tuple[list[GuardInput], list[str]]:
    """Every input check of a request, and a label per check: the last user turn with each
    image, then each earlier turn, tool result, assistant turn and `name`, each judged on its
    own text, an assistant turn as the answer to the turn before it (the verdict cache makes a
    long conversation cost only its new turns)."""
    checks = input_checks(prompt, images, rules)
    labels = [image.label for image in images] or ["last user turn"] * len(checks)
    for turn in turns:
        reasoning, policy = rules.reasoning, rules.guard_policy
        if turn.context is not None:  # an assistant turn: judged as an answer, in context
            checks.append(GuardInput(turn.context, None, turn.text, reasoning, policy))
        else:
            checks.append(GuardInput(turn.text, reasoning=reasoning, policy=policy))
        labels.append(f"{turn.path} ({turn.role})")
    return checks, labels


def output_checks(
    prompt: str, image: str | None, answers: list[str], rules: DirectionRules
) -> list[GuardInput]:
    policy, reasoning = rules.guard_policy, rules.reasoning
    return [
        GuardInput(prompt, image, answer, reasoning, policy) for answer in answers if answer.strip()
    ]


async def run_checks(
    guard: Guard, checks: list[GuardInput], labels: Sequence[str] = ()
) -> CheckResult:
    """Run the checks concurrently; the first unsafe verdict decides and cancels the rest.

    Each verdict is read for its own check's turn: the prompt's rating, or the response's
    where the check judges an answer in context (an assistant turn of the history is one).
    With `labels` (one per check), the result says which part was judged how.
    """
    if not checks:
        return SKIPPED
    started = time.perf_counter()
    try:
        verdicts = await _classify_all(guard, checks)
    except GuardError as exc:
        overloaded = isinstance(exc, GuardOverloaded)
        latency = _since(started)
        return CheckResult(
            CheckStatus.ERROR, error=str(exc), latency_ms=latency, overloaded=overloaded
        )
    pairs = list(zip(checks, verdicts, strict=True))
    result = _combine([(c, v) for c, v in pairs if v is not None], _since(started))
    if len(labels) > 1:
        parts = tuple(_part(label, c, v) for label, (c, v) in zip(labels, pairs, strict=True))
        result = replace(result, parts=parts)
    return result


async def _classify_all(guard: Guard, checks: list[GuardInput]) -> list[Verdict | None]:
    """Every verdict (None where cancelled). An unsafe verdict ends the rest early and wins
    over any guard error: one image the guard cannot read must not let another one through."""
    if len(checks) == 1:
        return [await guard.classify(checks[0])]
    tasks = [asyncio.ensure_future(guard.classify(check)) for check in checks]
    direction_of = {task: check.direction for task, check in zip(tasks, checks, strict=True)}
    error: GuardError | None = None
    pending: set[asyncio.Task[Verdict]] = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = task.exception()
                if isinstance(failure, GuardError):
                    error = error or failure
                elif failure is not None:
                    raise failure
                elif task.result().is_unsafe(direction_of[task]):
                    error, pending = None, set()
                    break
    finally:
        for task in tasks:
            task.cancel()
    if error is not None:
        raise error
    return [_result(task) for task in tasks]


def _result(task: asyncio.Future[Verdict]) -> Verdict | None:
    if not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return task.result()


def _part(label: str, check: GuardInput, verdict: Verdict | None) -> dict[str, object]:
    if verdict is None:
        return {"part": label, "status": "not_checked"}
    status = CheckStatus.UNSAFE if verdict.is_unsafe(check.direction) else CheckStatus.SAFE
    return {"part": label, "status": status.value, "categories": list(verdict.categories)}


def _combine(done: list[tuple[GuardInput, Verdict]], latency_ms: float) -> CheckResult:
    verdicts = [v for _, v in done]
    unsafe = [v for check, v in done if v.is_unsafe(check.direction)]
    categories = tuple(dict.fromkeys(c for v in unsafe for c in v.categories))
    unknown = {c for check, v in done for c in v.categories if c not in known_names(check.policy)}
    both = [v for v in unsafe if v.user is Safety.UNSAFE and v.response is Safety.UNSAFE]
    shared = [c for v in both for c in v.categories]
    return CheckResult(
        CheckStatus.UNSAFE if unsafe else CheckStatus.SAFE,
        categories,
        tuple(v.reasoning for v in verdicts if v.reasoning),
        None,
        latency_ms,
        tuple(verdicts),
        policy_violation=any(v.policy_violation for v in unsafe),
        unknown_categories=tuple(c for c in categories if c in unknown),
        shared_with_prompt=tuple(dict.fromkeys(shared)),
    )


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
