"""A chain's checks merged (a stream's windows, an MCP exchange's several checks): each guard's
verdict in the audit is its own results merged, as the whole check's are."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import reduce

import pytest

from guardproxy.core.conversation import Turn
from guardproxy.core.verdict import DEFAULT_POLICY, GuardInput, Safety, Verdict
from guardproxy.pipeline.chain import Chain, Link, Runner
from guardproxy.pipeline.checks import CheckResult, CheckStatus
from guardproxy.policy.model import InputPolicy
from guardproxy.policy.profile import DirectionRules

RULES = DirectionRules({}, "block", DEFAULT_POLICY, False)
SAFE, UNSAFE = CheckStatus.SAFE, CheckStatus.UNSAFE


def scripted(results: Sequence[CheckResult]) -> Runner:
    """A guard that answers its checks with `results`, one per call, in order."""
    answers: Iterator[CheckResult] = iter(results)

    async def run(checks: list[GuardInput], labels: Sequence[str]) -> CheckResult:
        return next(answers)

    return run


def scored(status: CheckStatus, score: float, latency_ms: float) -> CheckResult:
    safety = Safety.UNSAFE if status is UNSAFE else Safety.SAFE
    return CheckResult(status, latency_ms=latency_ms, verdicts=(Verdict(safety, score=score),))


@pytest.mark.anyio
async def test_each_guards_verdict_over_a_streams_windows_is_its_windows_merged() -> None:
    safety = [CheckResult(SAFE, latency_ms=10.0), CheckResult(UNSAFE, ("Violence",), latency_ms=20)]
    injection = [scored(SAFE, 0.1, 5.0), scored(SAFE, 0.4, 7.0)]
    chain = Chain((Link("safety", scripted(safety)), Link("injection", scripted(injection))))
    windows = [await chain.judge_output([GuardInput("q", None, "a")]) for _ in range(2)]

    merged = reduce(CheckResult.merge, windows).summary(detail=True)

    assert merged["status"] == "unsafe"
    assert merged["categories"] == ["Violence"]
    assert merged["guards"] == [
        {"guard": "safety", "status": "unsafe", "categories": ["Violence"], "latency_ms": 30.0},
        # a classifier's score over the stream is its riskiest window's
        {"guard": "injection", "status": "safe", "score": 0.4, "latency_ms": 12.0},
    ]


@pytest.mark.anyio
async def test_the_turns_each_guard_flagged_are_united_and_its_error_kept_from_the_client() -> None:
    error = CheckResult(CheckStatus.ERROR, error="connect failed")
    safety = [CheckResult(SAFE), error]
    injection = [CheckResult(UNSAFE, ("Prompt Injection",)), CheckResult(UNSAFE, ("Jailbreak",))]
    tool_only = frozenset({"tool"})
    chain = Chain(
        (Link("safety", scripted(safety)), Link("injection", scripted(injection), tool_only))
    )
    checks = []
    for index in (1, 3):
        tool = Turn(f"messages[{index}]", "tool", f"result {index}")
        checks.append(await chain.judge_input("hi", (), [tool], RULES, InputPolicy()))

    merged = checks[0].merge(checks[1])

    audited = merged.summary(detail=True)["guards"]
    assert audited == [
        {"guard": "safety", "status": "error", "error": "connect failed"},
        {
            "guard": "injection",
            "status": "unsafe",
            "categories": ["Prompt Injection", "Jailbreak"],
            "flagged": ["messages[1] (tool)", "messages[3] (tool)"],
        },
    ]
    shown = merged.summary()["guards"]
    assert shown == [{"guard": "safety", "status": "error"}, audited[1]]
