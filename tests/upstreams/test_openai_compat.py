"""The OpenAI-compatible upstream adapter, against respx."""

from __future__ import annotations

import httpx
import pytest
import respx

from guardproxy.api.chat.codec import parse_chat_request
from guardproxy.config import UpstreamSettings
from guardproxy.errors import UpstreamError, UpstreamTimeout
from guardproxy.upstreams.openai_compat import OpenAIUpstream

URL = "http://llm.test/v1"
RAW = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"extra":1}'


def upstream(client: httpx.AsyncClient, **settings: object) -> OpenAIUpstream:
    return OpenAIUpstream(client, UpstreamSettings.model_validate({"url": URL, **settings}))


@pytest.mark.anyio
async def test_body_is_sent_verbatim_with_the_configured_key() -> None:
    with respx.mock:
        route = respx.post(f"{URL}/chat/completions").respond(
            200, content=b"data: [DONE]\n\n", headers={"x-request-id": "up-1", "server": "x"}
        )
        async with httpx.AsyncClient() as client:
            adapter = upstream(client, api_key="sk-up")
            reply = await adapter.send(parse_chat_request(RAW), RAW, {"user-agent": "app/1"})
            assert reply.stream is not None
            chunks = [chunk async for chunk in reply.stream]
            await reply.aclose()
    sent = route.calls.last.request
    assert sent.content == RAW
    assert sent.headers["authorization"] == "Bearer sk-up"
    assert sent.headers["user-agent"] == "app/1"
    assert b"".join(chunks) == b"data: [DONE]\n\n"
    assert reply.headers == {"x-request-id": "up-1"}


@pytest.mark.anyio
async def test_error_status_is_returned_whole_not_streamed() -> None:
    body = b'{"error":{"message":"slow down","type":"requests","param":null,"code":null}}'
    with respx.mock:
        respx.post(f"{URL}/chat/completions").respond(429, content=body)
        async with httpx.AsyncClient() as client:
            reply = await upstream(client).send(parse_chat_request(RAW), RAW, {})
    assert (reply.status, reply.body, reply.stream) == (429, body, None)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("refused: llm.internal:8443"), UpstreamError),
        (httpx.ReadTimeout("slow: llm.internal:8443"), UpstreamTimeout),
    ],
)
async def test_transport_failures_become_upstream_errors_that_do_not_name_the_host(
    error: Exception, expected: type[Exception]
) -> None:
    with respx.mock:
        respx.post(f"{URL}/chat/completions").mock(side_effect=error)
        async with httpx.AsyncClient() as client:
            with pytest.raises(expected) as caught:
                await upstream(client).send(parse_chat_request(RAW), RAW, {})
    assert isinstance(caught.value, UpstreamError)
    assert "llm.internal" not in str(caught.value)  # what the client reads
    assert "llm.internal" in caught.value.detail  # what the log keeps


@pytest.mark.anyio
async def test_probe_reports_unreachable_and_server_errors() -> None:
    with respx.mock:
        respx.get(f"{URL}/models").mock(side_effect=[httpx.ConnectError("x"), httpx.Response(500)])
        async with httpx.AsyncClient() as client:
            adapter = upstream(client)
            assert await adapter.probe() == "unreachable: ConnectError"
            assert await adapter.probe() == "HTTP 500"
