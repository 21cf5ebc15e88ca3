"""The litellm upstream adapter, with litellm's `acompletion` replaced by a stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guardproxy.api.chat.codec import parse_chat_request
from guardproxy.api.messages.codec import MESSAGES
from guardproxy.api.responses.codec import RESPONSES
from guardproxy.config import UpstreamSettings
from guardproxy.core.sse import SSEDecoder
from guardproxy.errors import UpstreamError
from guardproxy.upstreams.litellm_adapter import LitellmUpstream

SETTINGS = UpstreamSettings(litellm_model="anthropic/claude-x", litellm_params={"top_k": 3})


class Dumpable:
    """Shaped like litellm's ModelResponse: a pydantic object with model_dump()."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def model_dump(self) -> dict[str, Any]:
        return self.data


class ProviderError(Exception):
    status_code = 401
    message = "invalid x-api-key"


def raw(stream: bool = False) -> bytes:
    messages = [{"role": "user", "content": "hi"}]
    return json.dumps({"model": "m", "messages": messages, "stream": stream, "seed": 7}).encode()


@pytest.mark.anyio
async def test_request_fields_are_passed_on_with_the_configured_model() -> None:
    seen: dict[str, Any] = {}

    async def acompletion(**kwargs: Any) -> Dumpable:
        seen.update(kwargs)
        return Dumpable({"object": "chat.completion", "choices": []})

    reply = await LitellmUpstream(SETTINGS, acompletion).send(parse_chat_request(raw()), raw(), {})
    assert seen["model"] == "anthropic/claude-x"
    assert seen["seed"] == 7
    assert seen["top_k"] == 3
    assert json.loads(reply.body) == {"object": "chat.completion", "choices": []}


@pytest.mark.anyio
async def test_stream_is_framed_as_openai_sse() -> None:
    async def chunks() -> AsyncIterator[Dumpable]:
        for text in ("a", "b"):
            yield Dumpable({"choices": [{"index": 0, "delta": {"content": text}}]})

    async def acompletion(**kwargs: Any) -> AsyncIterator[Dumpable]:
        return chunks()

    reply = await LitellmUpstream(SETTINGS, acompletion).send(
        parse_chat_request(raw(True)), raw(True), {}
    )
    assert reply.stream is not None
    data = b"".join([chunk async for chunk in reply.stream])
    events = SSEDecoder().feed(data)
    assert [e.data for e in events][-1] == "[DONE]"
    assert len(events) == 3


@pytest.mark.anyio
async def test_provider_errors_keep_their_status() -> None:
    async def acompletion(**kwargs: Any) -> Any:
        raise ProviderError("no")

    reply = await LitellmUpstream(SETTINGS, acompletion).send(parse_chat_request(raw()), raw(), {})
    assert reply.status == 401
    assert json.loads(reply.body)["error"]["message"] == "invalid x-api-key"


@pytest.mark.anyio
async def test_errors_without_a_status_are_bad_gateway() -> None:
    async def acompletion(**kwargs: Any) -> Any:
        raise RuntimeError("socket closed")

    with pytest.raises(UpstreamError):
        await LitellmUpstream(SETTINGS, acompletion).send(parse_chat_request(raw()), raw(), {})


@pytest.mark.anyio
async def test_closing_a_stream_closes_the_providers_stream() -> None:
    closed: list[bool] = []

    class ProviderStream:
        def __aiter__(self) -> AsyncIterator[Dumpable]:
            return self.chunks()

        async def chunks(self) -> AsyncIterator[Dumpable]:
            yield Dumpable({"choices": [{"index": 0, "delta": {"content": "a"}}]})

        async def aclose(self) -> None:
            closed.append(True)

    async def acompletion(**kwargs: Any) -> ProviderStream:
        return ProviderStream()

    reply = await LitellmUpstream(SETTINGS, acompletion).send(
        parse_chat_request(raw(True)), raw(True), {}
    )
    await reply.aclose()
    assert closed == [True]


@pytest.mark.anyio
async def test_responses_events_are_framed_by_their_type() -> None:
    async def events() -> AsyncIterator[Dumpable]:
        yield Dumpable({"type": "response.created", "sequence_number": 0})
        yield Dumpable({"type": "response.completed", "sequence_number": 1})

    async def aresponses(**kwargs: Any) -> AsyncIterator[Dumpable]:
        assert kwargs["input"] == "hi"
        return events()

    raw = b'{"model": "m", "input": "hi", "stream": true}'
    upstream = LitellmUpstream(SETTINGS, calls={"responses": aresponses})
    reply = await upstream.send(RESPONSES.decode(raw), raw, {})
    assert reply.stream is not None
    data = b"".join([chunk async for chunk in reply.stream])
    assert data.startswith(b"event: response.created\ndata: ")
    assert b"[DONE]" not in data


@pytest.mark.anyio
async def test_a_streamed_message_through_litellm_is_told_as_message_events() -> None:
    async def acreate(**kwargs: Any) -> dict[str, Any]:
        assert kwargs["stream"] is False
        return {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }  # fmt: skip

    messages = b'[{"role": "user", "content": "x"}]'
    raw = b'{"model": "m", "max_tokens": 5, "stream": true, "messages": ' + messages + b"}"
    upstream = LitellmUpstream(SETTINGS, calls={"messages": acreate})
    reply = await upstream.send(MESSAGES.decode(raw), raw, {})
    assert reply.stream is not None
    events = SSEDecoder().feed(b"".join([chunk async for chunk in reply.stream]))
    kinds = [json.loads(e.data or "{}")["type"] for e in events]
    assert kinds == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
