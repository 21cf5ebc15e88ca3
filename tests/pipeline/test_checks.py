"""Building and running guard checks: several images at once, early exit, errors against unsafe
verdicts; turns grouped into windows past the cap, long texts in segments, normalised text."""

from __future__ import annotations

import asyncio
import itertools
import re

import pytest

from guardproxy.core.conversation import Turn
from guardproxy.core.verdict import (
    DEFAULT_POLICY,
    Direction,
    GuardInput,
    GuardPolicy,
    Safety,
    Verdict,
)
from guardproxy.errors import GuardUnavailable, RequestError
from guardproxy.media.request import GuardImage
from guardproxy.pipeline.checks import (
    CheckStatus,
    conversation_checks,
    output_checks,
    run_checks,
    segments,
)
from guardproxy.policy.profile import DirectionRules

RULES = DirectionRules({}, "block", DEFAULT_POLICY, False)
WINDOW = 2000
WINDOW_LABEL = re.compile(r"messages\[\d+\] \.\. messages\[\d+\] \(assistant, \d+ parts\)")


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


def turns(count: int, text: str = "Tell me about roses, please.") -> list[Turn]:
    """`count` earlier turns, user and assistant in turn, each assistant turn answering the
    user turn before it."""
    made: list[Turn] = []
    for number in range(count):
        path = f"messages[{number}]"
        if number % 2:
            made.append(Turn(path, "assistant", f"Answer {number}.", made[-1].text))
        else:
            made.append(Turn(path, "user", f"{text} ({number})"))
    return made


def judged(checks: list[GuardInput]) -> str:
    return "\n".join(f"{c.prompt}\n{c.response or ''}" for c in checks)


def test_a_short_conversation_is_judged_turn_by_turn_with_its_labels() -> None:
    checks, labels = conversation_checks("And tulips?", [], turns(4), RULES, WINDOW, 8)
    assert labels == [
        "last user turn",
        "messages[0] (user)",
        "messages[1] (assistant)",
        "messages[2] (user)",
        "messages[3] (assistant)",
    ]
    assert checks[2] == GuardInput("Tell me about roses, please. (0)", None, "Answer 1.", False)


def test_past_the_cap_turns_are_judged_in_windows_that_fit_the_guard() -> None:
    history = turns(1000)
    history[501] = Turn("messages[501]", "assistant", "Here is how to build a bomb.", "Go on")
    checks, labels = conversation_checks("And tulips?", [], history, RULES, WINDOW, 32)
    assert len(checks) <= 32
    assert all(len(c.prompt) + len(c.response or "") <= WINDOW for c in checks)
    assert len(labels) == len(checks)
    [window] = [c for c in checks if "build a bomb" in (c.response or "")]
    assert window.direction is Direction.OUTPUT  # still judged as an answer, not a prompt
    assert WINDOW_LABEL.fullmatch(labels[checks.index(window)])
    assert all(f"({number})" in judged(checks) for number in range(0, 1000, 2))


def test_windows_are_prefix_stable_so_a_growing_conversation_reuses_earlier_ones() -> None:
    before, _ = conversation_checks("Next?", [], turns(1000), RULES, WINDOW, 32)
    after, _ = conversation_checks("Next?", [], turns(1004), RULES, WINDOW, 32)
    assert len(set(after) - set(before)) <= 3  # the two open windows and the new last turn


def test_a_request_that_needs_more_calls_than_the_cap_is_refused() -> None:
    history = turns(40, text="x" * 1500)
    with pytest.raises(RequestError, match="more than the 8 allowed") as caught:
        conversation_checks("Hi", [], history, RULES, WINDOW, 8)
    assert caught.value.param == "messages"


def test_separate_policy_calls_count_twice_against_the_cap() -> None:
    policy = GuardPolicy(rules="No gardening talk.", mode="separate")
    rules = DirectionRules({}, "block", policy, False)
    checks, _ = conversation_checks("Hi", [], turns(4), rules, WINDOW, 10)
    assert len(checks) == 5
    windowed, _ = conversation_checks("Hi", [], turns(4), rules, WINDOW, 9)
    assert len(windowed) == 3  # the last turn, one window of prompts, one of answers


def test_a_text_longer_than_a_window_is_judged_in_overlapping_segments() -> None:
    prompt = "safe words " * 1000 + "how to build a bomb" + " more" * 20
    checks, labels = conversation_checks(prompt, [], [], RULES, WINDOW, 32)
    assert len(checks) > 1
    assert all(len(c.prompt) <= WINDOW for c in checks)
    assert "".join(c.prompt for c in checks).count("build a bomb") >= 1
    assert any("build a bomb" in c.prompt for c in checks)
    assert labels[0] == f"last user turn (part 1 of {len(checks)})"


def test_segments_cover_the_text_and_overlap_by_an_eighth_of_a_window() -> None:
    text = "".join(chr(ord("a") + n % 26) for n in range(10_000))
    parts = segments(text, 1000)
    assert all(len(part) <= 1000 for part in parts)
    assert parts[0] == text[:1000]
    assert text.endswith(parts[-1])
    for first, second in itertools.pairwise(parts):
        assert first[-125:] == second[:125]
    assert segments("short", 1000) == ["short"]


def test_a_long_prompt_with_images_sends_each_image_with_its_last_segment() -> None:
    images = [GuardImage("messages[0].content[1]", "data:a"), GuardImage("m.c[2]", "data:b")]
    prompt = "word " * 1000
    checks, labels = conversation_checks(prompt, images, [], RULES, WINDOW, 32)
    with_image = [c for c in checks if c.image_url is not None]
    assert [c.image_url for c in with_image] == ["data:a", "data:b"]
    assert all(c.prompt == segments(prompt, WINDOW)[-1] for c in with_image)
    assert labels[-2:] == ["messages[0].content[1]", "m.c[2]"]


def fullwidth(text: str) -> str:
    """ASCII letters as their full-width compatibility forms (U+FF01..U+FF5E)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def test_the_guard_judges_the_normalised_text() -> None:
    history = [Turn("messages[0]", "user", "how to build a bo\u200bmb")]
    checks, _ = conversation_checks(fullwidth("build a bomb"), [], history, RULES, WINDOW, 32)
    assert [c.prompt for c in checks] == ["build a bomb", "how to build a bomb"]
    [answer] = output_checks("q\u200b", None, ["a bo\u200bmb"], RULES, WINDOW)
    assert (answer.prompt, answer.response) == ("q", "a bomb")


def test_a_long_answer_is_judged_in_segments_each_with_the_end_of_the_prompt() -> None:
    prompt = "context " * 2000 + "the question?"
    answer = "fine " * 1000 + "how to build a bomb"
    checks = output_checks(prompt, "data:img", [answer, " "], RULES, WINDOW)
    assert len(checks) > 1
    assert all(c.prompt.endswith("the question?") for c in checks)
    assert all(len(c.prompt) <= WINDOW // 4 for c in checks)
    assert all(len(c.prompt) + len(c.response or "") <= WINDOW for c in checks)
    assert all(c.image_url == "data:img" for c in checks)
    assert "build a bomb" in (checks[-1].response or "")
