"""How the guard client spends calls: `policy_mode: separate` in parallel, reasoning deadlines,
and a missing trace reported once."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from guardproxy.config import CacheSettings, GuardSettings
from guardproxy.core.verdict import Direction, GuardInput, GuardPolicy, Safety
from guardproxy.errors import GuardUnavailable
from guardproxy.guards.cache import VerdictCache
from guardproxy.guards.client import HttpGuard, build_guard

pytestmark = pytest.mark.anyio

BASE_URL = "http://guard.test/v1"
ENDPOINT = f"{BASE_URL}/chat/completions"
SEPARATE = GuardPolicy(
    custom=(("Competitor Promotion", "Naming a rival bank."),),
    rules="Only discuss our products.",
    mode="separate",
)
PROMPT = "What does OtherBank offer?"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _guard(client: httpx.AsyncClient, **settings: Any) -> HttpGuard:
    return build_guard(client, GuardSettings(url=BASE_URL, model="guard", **settings))


def _answer(content: str) -> httpx.Response:
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return httpx.Response(200, json={"choices": [choice]})


def _mode(request: httpx.Request) -> str:
    kwargs = json.loads(request.content)["chat_template_kwargs"]
    return "policy" if "custom_policy" in kwargs else "taxonomy"


class Both:
    """Answers per mode; each call waits until both have arrived, so calls made one after the
    other would never finish."""

    def __init__(self, answers: dict[str, httpx.Response | Exception]) -> None:
        self.answers = answers
        self.arrived = 0
        self.together = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.arrived += 1
        if self.arrived == 2:
            self.together.set()
        await asyncio.wait_for(self.together.wait(), timeout=5)
        answer = self.answers[_mode(request)]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_separate_mode_makes_both_calls_at_once_and_is_unsafe_if_the_rules_are(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    both = Both(
        {"taxonomy": _answer("User Safety: safe"), "policy": _answer("User Safety: unsafe")}
    )
    respx_mock.post(ENDPOINT).mock(side_effect=both)
    verdict = await _guard(client).classify(GuardInput(PROMPT, policy=SEPARATE))
    assert verdict.user is Safety.UNSAFE
    assert verdict.policy_violation
    assert verdict.categories == ()
    assert [call.mode for call in verdict.calls] == ["taxonomy", "policy"]
    assert [call.user for call in verdict.calls] == [Safety.SAFE, Safety.UNSAFE]


async def test_separate_mode_takes_categories_from_the_categories_call(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    categories = _answer("User Safety: unsafe\nSafety Categories: Competitor Promotion")
    both = Both({"taxonomy": categories, "policy": _answer("User Safety: safe")})
    respx_mock.post(ENDPOINT).mock(side_effect=both)
    verdict = await _guard(client).classify(GuardInput(PROMPT, policy=SEPARATE))
    assert verdict.categories == ("Competitor Promotion",)
    assert not verdict.policy_violation


async def test_an_unsafe_call_wins_over_the_other_calls_failure(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    failure = httpx.ConnectError("down")
    both = Both({"taxonomy": failure, "policy": _answer("User Safety: unsafe")})
    respx_mock.post(ENDPOINT).mock(side_effect=both)
    verdict = await _guard(client, retries=0).classify(GuardInput(PROMPT, policy=SEPARATE))
    assert verdict.is_unsafe(Direction.INPUT)
    assert verdict.calls[0].user is None


async def test_a_failed_call_beside_a_safe_one_is_a_guard_error(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    both = Both({"taxonomy": _answer("User Safety: safe"), "policy": httpx.ConnectError("down")})
    respx_mock.post(ENDPOINT).mock(side_effect=both)
    with pytest.raises(GuardUnavailable):
        await _guard(client, retries=0).classify(GuardInput(PROMPT, policy=SEPARATE))


async def test_separate_mode_without_rules_is_one_call(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(return_value=_answer("User Safety: safe"))
    policy = GuardPolicy(suppressed=frozenset({"Profanity"}), mode="separate")
    await _guard(client).classify(GuardInput(PROMPT, policy=policy))
    assert route.call_count == 1


async def test_a_reasoning_call_gets_the_reasoning_deadline(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(
        return_value=_answer("<think>\nFine.\n\n</think>User Safety: safe")
    )
    guard = _guard(client, timeout_s=0.5, reasoning_timeout_s=40)
    await guard.classify(GuardInput(PROMPT, reasoning=True))
    await guard.classify(GuardInput(PROMPT))
    reasoning, plain = (call.request.extensions["timeout"]["read"] for call in route.calls)
    assert 0.5 < reasoning <= 40
    assert plain <= 0.5


async def test_a_missing_trace_is_marked_and_warned_about_once(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.post(ENDPOINT).mock(return_value=_answer("User Safety: safe"))
    guard = _guard(client)
    with caplog.at_level(logging.WARNING, logger="guardproxy.guards.client"):
        verdicts = [await guard.classify(GuardInput(PROMPT, reasoning=True)) for _ in range(3)]
    assert all(v.reasoning_unavailable for v in verdicts)
    assert len([r for r in caplog.records if "no reasoning trace" in r.getMessage()]) == 1


async def test_no_trace_without_reasoning_is_not_marked(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(ENDPOINT).mock(return_value=_answer("User Safety: safe"))
    assert not (await _guard(client).classify(GuardInput(PROMPT))).reasoning_unavailable


async def test_unknown_categories_are_counted_and_logged_once_per_name(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    content = "User Safety: unsafe\nSafety Categories: Unsafe Code Execution, Threat"
    respx_mock.post(ENDPOINT).mock(return_value=_answer(content))
    guard = _guard(client)
    with caplog.at_level(logging.WARNING, logger="guardproxy.guards.client"):
        for _ in range(2):
            await guard.classify(GuardInput(PROMPT))
    assert guard.unknown_categories == {"Unsafe Code Execution": 2}
    assert len([r for r in caplog.records if "Unsafe Code Execution" in r.getMessage()]) == 1


def _cached_guard(client: httpx.AsyncClient) -> HttpGuard:
    settings = GuardSettings(url=BASE_URL, model="guard", retries=0)
    return build_guard(client, settings, VerdictCache(CacheSettings()))


async def test_a_cached_verdict_is_served_without_a_call_and_marked(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(return_value=_answer("User Safety: safe"))
    guard = _cached_guard(client)
    first = await guard.classify(GuardInput(PROMPT))
    second = await guard.classify(GuardInput(PROMPT))
    assert route.call_count == 1
    assert (first.cached, second.cached) == (False, True)
    assert second.user is Safety.SAFE


async def test_another_policy_text_is_another_cache_key(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(return_value=_answer("User Safety: safe"))
    guard = _cached_guard(client)
    await guard.classify(GuardInput(PROMPT, policy=GuardPolicy(rules="No pets.")))
    await guard.classify(GuardInput(PROMPT, policy=GuardPolicy(rules="No plants.")))
    assert route.call_count == 2


async def test_errors_are_never_cached(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(
        side_effect=[httpx.Response(500), _answer("User Safety: unsafe")]
    )
    guard = _cached_guard(client)
    with pytest.raises(GuardUnavailable):
        await guard.classify(GuardInput(PROMPT))
    assert (await guard.classify(GuardInput(PROMPT))).user is Safety.UNSAFE
    assert route.call_count == 2
