"""A tenant's guards, run side by side on each check: a content-safety model beside a
jailbreak or injection classifier, each on the turns the tenant gives it.

    checks ─┬─► guard A (its turns) ─┐
            └─► guard B (its turns) ─┴─► one result: unsafe if any is, categories united,
                                         latency the slowest guard's, each guard's verdict kept

A chain of one is exactly the single guard's check, so `guard: NAME` behaves as it always has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import reduce

from guardproxy.core.conversation import OPERATOR_ROLES, Turn
from guardproxy.core.verdict import GuardInput
from guardproxy.media.request import GuardImage
from guardproxy.pipeline.checks import (
    SKIPPED,
    CheckResult,
    CheckStatus,
    Guard,
    GuardCheck,
    conversation_checks,
    run_checks,
)
from guardproxy.policy.model import InputPolicy, TenantPolicy
from guardproxy.policy.profile import DirectionRules

# Runs a list of checks (with a label each) on one guard: `run_checks` on it, or one that
# answers from a verdict file first (`eval`, `replay`).
Runner = Callable[[list[GuardInput], Sequence[str]], Awaitable[CheckResult]]
# What kind of turn each role's text is, for a guard's `turns:` (a role not listed is text
# the client wrote, such as a field the codec does not read as conversation).
TURN_KINDS = {
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
    "system": "system",
    "developer": "system",
}
LAST_TURN_KIND = "user"


def turn_kind(role: str) -> str:
    return TURN_KINDS.get(role, "user")


@dataclass(frozen=True)
class Link:
    """One guard of the chain: its name, how its checks run, and what it judges."""

    name: str
    run: Runner
    turns: frozenset[str] | None = None  # None: every turn, as a single `guard:` judges
    output: bool = True

    def judges(self, turn: Turn, operator: bool) -> bool:
        """`operator`: the tenant's `input.judge_system`, for a guard not given `turns`."""
        if self.turns is None:
            return operator or turn.role not in OPERATOR_ROLES
        return turn_kind(turn.role) in self.turns

    @property
    def judges_last_turn(self) -> bool:
        return self.turns is None or LAST_TURN_KIND in self.turns


@dataclass(frozen=True)
class Chain:
    links: tuple[Link, ...]

    @classmethod
    def of(cls, run: Runner, name: str = "") -> Chain:
        """A chain of one guard's runner."""
        return cls((Link(name, run),))

    async def judge_input(
        self,
        prompt: str,
        images: Sequence[GuardImage],
        history: Sequence[Turn],
        rules: DirectionRules,
        limits: InputPolicy,
    ) -> CheckResult:
        """Each guard's checks of the request's turns (all built first, so a request past
        `max_guard_calls` is refused before any guard is called), run side by side."""
        plans = [
            (link, *_input_checks(link, prompt, images, history, rules, limits))
            for link in self.links
        ]
        return await _run_all(plans)

    def judged_turns(self, history: Sequence[Turn], operator: bool) -> list[Turn]:
        """The turns some guard of the chain judges (what a `redact` may mask)."""
        return [turn for turn in history if any(x.judges(turn, operator) for x in self.links)]

    async def judge_output(self, checks: list[GuardInput]) -> CheckResult:
        """The answer's checks on every guard that judges answers."""
        return await _run_all([(link, checks, ()) for link in self.links if link.output])


def chain_for(tenant: TenantPolicy, runners: Callable[[str], Runner]) -> Chain:
    """The tenant's chain, each guard's checks run by `runners(name)`."""
    return Chain(
        tuple(
            Link(
                entry.guard,
                runners(entry.guard),
                None if entry.turns is None else frozenset(entry.turns),
                entry.output is not False,
            )
            for entry in tenant.guards
        )
    )


def guard_chain(tenant: TenantPolicy, guards: dict[str, Guard]) -> Chain:
    """The tenant's chain on the proxy's guards, checks run as the pipeline runs them."""
    return chain_for(tenant, lambda name: runner(guards[name]))


def runner(guard: Guard) -> Runner:
    """Checks run on `guard` as the pipeline runs them."""

    async def run(checks: list[GuardInput], labels: Sequence[str]) -> CheckResult:
        return await run_checks(guard, checks, labels)

    return run


def _input_checks(
    link: Link,
    prompt: str,
    images: Sequence[GuardImage],
    history: Sequence[Turn],
    rules: DirectionRules,
    limits: InputPolicy,
) -> tuple[list[GuardInput], list[str]]:
    turns = [turn for turn in history if link.judges(turn, limits.judge_system)]
    last_prompt, last_images = (prompt, list(images)) if link.judges_last_turn else ("", [])
    return conversation_checks(
        last_prompt, last_images, turns, rules, limits.window_chars, limits.max_guard_calls
    )


async def _run_all(plans: Sequence[tuple[Link, list[GuardInput], Sequence[str]]]) -> CheckResult:
    """The guards' results as one; a chain of one is its guard's result unchanged."""
    if len(plans) == 1:
        link, checks, labels = plans[0]
        return await link.run(checks, labels)
    results = await asyncio.gather(*(_run(link, checks, labels) for link, checks, labels in plans))
    if not results:
        return SKIPPED
    own = [
        GuardCheck(link.name, r, _flagged(labels, r))
        for (link, _, labels), r in zip(plans, results, strict=True)
    ]
    combined = reduce(CheckResult.merge, results)
    return replace(combined, latency_ms=_slowest(results), guards=tuple(own))


async def _run(link: Link, checks: list[GuardInput], labels: Sequence[str]) -> CheckResult:
    """A guard given nothing to judge (no turn of its kinds) is not called."""
    return await link.run(checks, labels) if checks else SKIPPED


def _slowest(results: Sequence[CheckResult]) -> float | None:
    latencies = [r.latency_ms for r in results if r.latency_ms is not None]
    return max(latencies) if latencies else None


def _flagged(labels: Sequence[str], result: CheckResult) -> tuple[str, ...]:
    """The turns the guard judged unsafe, by their labels ("messages[3] (tool)")."""
    if result.status is not CheckStatus.UNSAFE:
        return ()
    if result.parts:
        return tuple(str(p["part"]) for p in result.parts if p.get("status") == "unsafe")
    return tuple(labels[:1])
