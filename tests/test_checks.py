"""Running guard checks: several images at once, early exit, errors against unsafe verdicts."""

from __future__ import annotations

import asyncio

import pytest

from guardproxy.checks import CheckStatus, run_checks
from guardproxy.errors import GuardUnavailable
from guardproxy.verdict import GuardInput, Safety, Verdict


class ScriptedGuard:
    """Answers per image URL: 'unsafe', 'safe', 'error', or 'slow' (never answers)."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    async def classify(self, check: GuardInput) -> Verdict:
        kind = check.image_url or "safe"
        if kind == "error":
            raise GuardUnavailable("guard could not read the image")
        if kind == "slow":
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled.append(kind)
        return Verdict(
            Safety.UNSAFE if kind == "unsafe" else Safety.SAFE,
            categories=("Violence",) if kind == "unsafe" else (),
        )


def checks(*images: str) -> list[GuardInput]:
    return [GuardInput("look", image) for image in images]


@pytest.mark.anyio
async def test_an_unsafe_image_wins_over_a_guard_error() -> None:
    result = await run_checks(ScriptedGuard(), checks("error", "unsafe"))
    assert result.status is CheckStatus.UNSAFE


@pytest.mark.anyio
async def test_a_guard_error_without_an_unsafe_verdict_is_an_error() -> None:
    result = await run_checks(ScriptedGuard(), checks("safe", "error"))
    assert result.status is CheckStatus.ERROR
    assert result.error == "guard could not read the image"


@pytest.mark.anyio
async def test_the_first_unsafe_image_cancels_the_rest_and_is_named() -> None:
    guard = ScriptedGuard()
    labels = ["img0", "img1"]
    result = await run_checks(guard, checks("slow", "unsafe"), labels)
    assert result.status is CheckStatus.UNSAFE
    assert result.parts == (
        {"part": "img0", "status": "not_checked"},
        {"part": "img1", "status": "unsafe", "categories": ["Violence"]},
    )
    await asyncio.sleep(0)
    assert guard.cancelled == ["slow"]


class PromptUnsafeGuard:
    """Rates every prompt unsafe and every response safe."""

    async def classify(self, check: GuardInput) -> Verdict:
        response = None if check.response is None else Safety.SAFE
        return Verdict(Safety.UNSAFE, response, ("Violence",))


@pytest.mark.anyio
async def test_a_check_of_an_answer_in_context_is_read_by_the_answers_rating() -> None:
    answer = GuardInput("an unsafe question", response="a safe answer")
    result = await run_checks(PromptUnsafeGuard(), [answer, GuardInput("hi", "safe")])
    assert result.status is CheckStatus.UNSAFE  # the plain prompt check
    only_answer = await run_checks(PromptUnsafeGuard(), [answer])
    assert only_answer.status is CheckStatus.SAFE
