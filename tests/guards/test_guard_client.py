from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from guardproxy.config import GuardSettings
from guardproxy.core.verdict import GuardInput, Safety, Verdict
from guardproxy.errors import GuardUnavailable, UnparseableVerdict
from guardproxy.guards.client import HttpGuard, build_guard

pytestmark = pytest.mark.anyio

BASE_URL = "http://guard.test/v1"
ENDPOINT = f"{BASE_URL}/chat/completions"
PROMPT = "a prompt that must stay out of the logs"
CHECK = GuardInput(PROMPT)
SAFE_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "guard",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "User Safety: safe"},
            "finish_reason": "stop",
        }
    ],
}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _guard(client: httpx.AsyncClient, **settings: Any) -> HttpGuard:
    values: dict[str, Any] = {"url": BASE_URL + "/", "model": "guard", **settings}
    return build_guard(client, GuardSettings(**values))


def _safe() -> httpx.Response:
    return httpx.Response(200, json=SAFE_ANSWER)


async def test_posts_the_protocol_body_and_returns_its_verdict(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(return_value=_safe())
    verdict = await _guard(client).classify(CHECK)
    assert verdict == Verdict(user=Safety.SAFE, raw="User Safety: safe")
    sent = json.loads(route.calls.last.request.content)
    assert sent["model"] == "guard"
    assert sent["messages"] == [{"role": "user", "content": PROMPT}]


async def test_build_guard_picks_the_configured_protocol(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    answer = {"choices": [{"message": {"content": '{"User Safety": "unsafe"}'}}]}
    route = respx_mock.post(ENDPOINT).mock(return_value=httpx.Response(200, json=answer))
    guard = _guard(client, protocol="nemotron-safety-guard-8b")
    assert (await guard.classify(CHECK)).user is Safety.UNSAFE
    sent = json.loads(route.calls.last.request.content)
    assert sent["messages"][0]["content"].startswith("Task: Check if there is unsafe content")


async def test_retries_a_503_then_succeeds(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(side_effect=[httpx.Response(503), _safe()])
    assert (await _guard(client).classify(CHECK)).user is Safety.SAFE
    assert route.call_count == 2


async def test_retries_a_connect_error_then_succeeds(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(side_effect=[httpx.ConnectError("refused"), _safe()])
    assert (await _guard(client).classify(CHECK)).user is Safety.SAFE
    assert route.call_count == 2


async def test_gives_up_on_5xx_after_the_configured_retries(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(return_value=httpx.Response(503))
    with pytest.raises(GuardUnavailable, match="guard returned HTTP 503") as caught:
        await _guard(client, retries=2).classify(CHECK)
    assert route.call_count == 3
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)


async def test_unreachable_guard_is_unavailable_after_retries(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(GuardUnavailable, match="guard 'guard' unreachable: refused"):
        await _guard(client, retries=1).classify(CHECK)
    assert route.call_count == 2


async def test_zero_retries_means_one_attempt(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(return_value=httpx.Response(502))
    with pytest.raises(GuardUnavailable):
        await _guard(client, retries=0).classify(CHECK)
    assert route.call_count == 1


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_4xx_is_unavailable_without_retry(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter, status: int
) -> None:
    route = respx_mock.post(ENDPOINT).mock(return_value=httpx.Response(status))
    with pytest.raises(GuardUnavailable, match=f"guard returned HTTP {status}"):
        await _guard(client).classify(CHECK)
    assert route.call_count == 1


async def test_read_timeout_is_unavailable_without_retry(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(GuardUnavailable, match=r"guard timed out after 5\.0 s"):
        await _guard(client).classify(CHECK)
    assert route.call_count == 1


async def test_overall_deadline_ends_a_guard_that_never_answers(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    async def never_answers(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    respx_mock.post(ENDPOINT).mock(side_effect=never_answers)
    with pytest.raises(GuardUnavailable, match=r"guard timed out after 0\.05 s") as caught:
        await _guard(client, timeout_s=0.05).classify(CHECK)
    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_each_attempt_gets_at_most_the_overall_deadline_as_its_timeout(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(side_effect=[httpx.Response(500), _safe()])
    await _guard(client, timeout_s=3.0).classify(CHECK)
    for call in route.calls:
        timeouts = call.request.extensions["timeout"]
        assert 0 < timeouts["read"] <= 3.0
        assert 0 < timeouts["connect"] <= 3.0


async def test_api_key_is_sent_as_a_bearer_token_when_set(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(return_value=_safe())
    await _guard(client, api_key="nvapi-secret").classify(CHECK)
    assert route.calls.last.request.headers["authorization"] == "Bearer nvapi-secret"


async def test_no_authorization_header_without_an_api_key(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(ENDPOINT).mock(return_value=_safe())
    await _guard(client).classify(CHECK)
    assert "authorization" not in route.calls.last.request.headers


@pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b"", b"[1, 2]", b"\xff\xfe"])
async def test_a_body_that_is_not_a_json_object_is_unparseable(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter, body: bytes
) -> None:
    respx_mock.post(ENDPOINT).mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(UnparseableVerdict):
        await _guard(client).classify(CHECK)


async def test_protocol_errors_pass_through_unchanged(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter
) -> None:
    answer = {"choices": [{"message": {"content": "I think it is fine"}}]}
    respx_mock.post(ENDPOINT).mock(return_value=httpx.Response(200, json=answer))
    with pytest.raises(UnparseableVerdict) as caught:
        await _guard(client).classify(CHECK)
    assert caught.value.raw == "I think it is fine"


async def test_prompt_text_and_api_key_are_never_logged_above_debug(
    client: httpx.AsyncClient, respx_mock: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    respx_mock.post(ENDPOINT).mock(side_effect=[httpx.Response(503), _safe()])
    with caplog.at_level(logging.DEBUG, logger="guardproxy.guards.client"):
        await _guard(client, api_key="nvapi-secret").classify(CHECK)
    loud = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert loud, "the retry should be logged"
    assert not any(PROMPT in message or "nvapi-secret" in message for message in loud)
    everything = " ".join(r.getMessage() for r in caplog.records)
    assert "nvapi-secret" not in everything
