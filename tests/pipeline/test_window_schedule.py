"""The window schedule at default settings: guard calls, characters judged and guard tokens
per answer, against an instant guard and an upstream that lets each check finish before its
next token (so no window grows because the guard was busy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from guardproxy.core.sse import encode_event
from guardproxy.core.verdict import Safety, Verdict
from guardproxy.pipeline.checks import CheckResult, CheckStatus
from guardproxy.pipeline.decision import Action
from guardproxy.pipeline.exchange import ModerationStats
from guardproxy.pipeline.moderation import ChunkedModerator, Moderation, largest_window
from guardproxy.policy.model import OutputPolicy
from guardproxy.upstreams.base import UpstreamReply
from tests.pipeline.test_moderation import REFUSAL, chat_stream, delta, texts

DEFAULT = OutputPolicy()
UNSAFE_PHRASE = "build a bomb"
TOKENS_PER_CALL = 100  # what the scripted guard says each call's prompt took


def tokens(n: int, middle: str = "") -> list[str]:
    """An answer of n tokens as the fake upstream streams one (`token0 `, `token1 `, ...)."""
    words = [f"token{i} " for i in range(n)]
    if middle:
        words.insert(n // 2, middle)
    return words


async def paced(words: list[str]) -> AsyncIterator[bytes]:
    yield encode_event({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
    for word in words:
        for _ in range(3):  # the check of a window closed on the last token finishes first
            await asyncio.sleep(0)
        yield delta(word)
    yield encode_event("[DONE]")


class Recorder:
    """An instant guard that records what it judged; unsafe where a phrase appears."""

    def __init__(self, unsafe: str | None = None, cached: bool = False) -> None:
        self.asked: list[str] = []
        self.unsafe, self.cached = unsafe, cached

    async def check(self, text: str) -> CheckResult:
        self.asked.append(text)
        rating = Safety.UNSAFE if self.unsafe and self.unsafe in text else Safety.SAFE
        verdict = Verdict(None, rating, prompt_tokens=TOKENS_PER_CALL, cached=self.cached)
        status = CheckStatus.UNSAFE if rating is Safety.UNSAFE else CheckStatus.SAFE
        return CheckResult(status, verdicts=(verdict,))


def judge(result: CheckResult, text: str) -> Action:
    return Action.BLOCK if result.status is CheckStatus.UNSAFE else Action.ALLOW


async def moderate(
    words: list[str], policy: OutputPolicy = DEFAULT, guard: Recorder | None = None
) -> tuple[ModerationStats, list[str], list[bytes]]:
    guard = guard or Recorder()
    reply = UpstreamReply(200, stream=paced(words))
    moderation = Moderation(guard.check, judge, lambda action: [REFUSAL])
    moderator = ChunkedModerator(reply, policy, moderation, chat_stream())
    chunks = [chunk async for chunk in moderator.events()]
    return moderator.stats, guard.asked, chunks


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer_tokens", "calls", "judged_chars"),
    # Windows of 7, 28, 147, 734, 3672 and 11,872 (the largest) new characters, each with
    # up to 128 of context; then the final check of the whole answer, which gates the last
    # window. Doubling windows up to 512 took 10, 17 and 45 calls (2.30, 2.26, 2.25 times).
    [(100, 4, 1014), (500, 5, 5476), (2000, 7, 35776)],
)
async def test_guard_calls_and_characters_judged_grow_slower_than_the_answer(
    answer_tokens: int, calls: int, judged_chars: int
) -> None:
    stats, asked, chunks = await moderate(tokens(answer_tokens))
    answer = "".join(tokens(answer_tokens))
    assert texts(chunks) == answer
    assert (stats.checks, stats.judged_chars, stats.answer_chars) == (
        calls, judged_chars, len(answer),
    )  # fmt: skip
    assert len(asked) == calls
    assert asked[-1] == answer  # the final check, which also gates the last window
    assert stats.view()["guard_tokens"] == calls * TOKENS_PER_CALL


@pytest.mark.anyio
async def test_a_hundred_token_answer_is_judged_at_most_1_6_times_over() -> None:
    stats, _, _ = await moderate(tokens(100))
    assert stats.judged_chars / stats.answer_chars <= 1.6


@pytest.mark.anyio
async def test_the_first_window_is_still_the_first_word() -> None:
    _, asked, chunks = await moderate(tokens(100))
    assert asked[0] == "token0 "
    assert texts(chunks[:1]) == "token0 "  # released alone, one guard call after it arrived


def windows_of(answer: str, asked: list[str]) -> list[tuple[int, int]]:
    """(context, new) characters of each window check, read back against the answer."""
    at, found = 0, []
    for checked in asked:
        start = answer.index(checked, max(0, at - DEFAULT.overlap))
        assert start <= at  # contiguous: no text is skipped
        context = at - start
        found.append((context, len(checked) - context))
        at += len(checked) - context
    return found


@pytest.mark.anyio
async def test_each_window_is_growth_times_what_came_before_with_a_quarter_of_context() -> None:
    answer = tokens(2000)
    _, asked, _ = await moderate(answer)
    released = 0
    for context, new in windows_of("".join(answer), asked[:-1]):  # the last is the final check
        assert new >= min(DEFAULT.growth * released, largest_window(DEFAULT)) or released == 0
        assert context == min(released, DEFAULT.overlap, -(-new // 4))
        released += new


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer_tokens", "by"), [(100, "the final check"), (2000, "a window's check")]
)
async def test_an_unsafe_phrase_in_the_middle_cuts_off_before_it_reaches_the_client(
    answer_tokens: int, by: str
) -> None:
    words = tokens(answer_tokens, f"here is how to {UNSAFE_PHRASE} ")
    guard = Recorder(unsafe=UNSAFE_PHRASE)
    _, asked, chunks = await moderate(words, guard=guard)
    released = texts(chunks)
    assert released.startswith("token0 ")
    assert UNSAFE_PHRASE not in released
    assert "".join(words).startswith(released)  # what came before it, nothing after
    assert chunks[-1] == REFUSAL
    assert b"[DONE]" not in b"".join(chunks)
    caught_by_final = asked[-1] == "".join(words)
    assert caught_by_final == (by == "the final check")


@pytest.mark.anyio
async def test_cached_verdicts_cost_no_guard_tokens() -> None:
    stats, _, _ = await moderate(tokens(100), guard=Recorder(cached=True))
    assert "guard_tokens" not in stats.view()


def test_old_window_settings_still_cap_the_windows() -> None:
    assert largest_window(OutputPolicy(window=512)) == 512
    assert largest_window(DEFAULT) == 16000 - 4000 - 128  # beside the overlap and the prompt
