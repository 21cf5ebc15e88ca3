"""The fake LLM's `POST /v1/messages`: Anthropic's Messages API wire format, whole and streamed.

It authenticates with `x-api-key` and requires `anthropic-version`, as Anthropic does, and
answers errors in Anthropic's shape. A stream is `message_start`, `content_block_start`,
`ping`, `content_block_delta` (`text_delta`)…, `content_block_stop`, `message_delta` (the
stop reason and output usage), `message_stop`. A tool call (`state.tool_call`) is a `tool_use`
block whose input streams as `input_json_delta` fragments.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes import upstream as fake

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}


class AnthropicError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> JSONResponse:
        kind = ERROR_TYPES.get(self.status, "api_error")
        error = {"type": "error", "error": {"type": kind, "message": self.message}}
        return JSONResponse(error, status_code=self.status)


def user_texts(messages: list[Any]) -> list[str]:
    texts = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return texts


def _event(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def _message(body: dict[str, Any], content: list[Any], stop: str | None, usage: Any) -> Any:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def _tool_use(name: str, arguments: str | None) -> dict[str, Any]:
    block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name}
    return {**block, "input": json.loads(arguments) if arguments else {}}


async def _stream(
    state: fake.FakeUpstreamState, body: dict[str, Any], tokens: list[str], prompt: int
) -> AsyncGenerator[bytes, None]:
    state.open_streams += 1
    finished = False
    try:
        usage = {"input_tokens": prompt, "output_tokens": 1}
        yield _event({"type": "message_start", "message": _message(body, [], None, usage)})
        await asyncio.sleep(state.ttft_s)
        if state.tool_call is not None:
            name, arguments = state.tool_call
            block, pieces = _tool_use(name, None), fake.fragments(arguments)
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces]
            stop = "tool_use"
        else:
            block, stop = {"type": "text", "text": ""}, "end_turn"
            deltas = [{"type": "text_delta", "text": token} for token in tokens]
        yield _event({"type": "content_block_start", "index": 0, "content_block": block})
        yield _event({"type": "ping"})
        for number, piece in enumerate(deltas):
            if number:
                await asyncio.sleep(state.token_interval_s)
            yield _event({"type": "content_block_delta", "index": 0, "delta": piece})
        yield _event({"type": "content_block_stop", "index": 0})
        delta: dict[str, Any] = {"stop_reason": stop, "stop_sequence": None}
        yield _event(
            {"type": "message_delta", "delta": delta, "usage": {"output_tokens": len(deltas)}}
        )
        yield _event({"type": "message_stop"})
        finished = True
    finally:
        state.open_streams -= 1
        state.streams_completed += finished
        state.streams_closed_early += not finished


def _check(request: Request, state: fake.FakeUpstreamState, body: Any) -> dict[str, Any]:
    if state.api_key is not None and request.headers.get("x-api-key") != state.api_key:
        raise AnthropicError(401, "invalid x-api-key")
    if "anthropic-version" not in request.headers:
        raise AnthropicError(400, "anthropic-version: header is required")
    if not isinstance(body, dict):
        raise AnthropicError(400, "There was an error parsing the body of your request.")
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            raise AnthropicError(400, f"{field}: Field required")
    return body


async def answer(state: fake.FakeUpstreamState, body: dict[str, Any]) -> Response:
    texts = user_texts(body["messages"])
    reply = fake.pick_reply(state, texts[-1] if texts else "")
    tokens = fake.TOKEN_PATTERN.findall(reply)
    prompt = sum(fake.count_words(text) for text in texts)
    if body.get("stream") is True:
        return fake.ClosingStreamingResponse(_stream(state, body, tokens, prompt))
    await asyncio.sleep(state.ttft_s + state.token_interval_s * max(len(tokens) - 1, 0))
    usage = {"input_tokens": prompt, "output_tokens": len(tokens)}
    if state.tool_call is not None:
        return JSONResponse(_message(body, [_tool_use(*state.tool_call)], "tool_use", usage))
    return JSONResponse(_message(body, [{"type": "text", "text": reply}], "end_turn", usage))


def create_endpoint(state: fake.FakeUpstreamState) -> Any:
    """POST /v1/messages."""

    async def messages(request: Request) -> Response:
        raw, parsed = await fake.read_json(request)
        state.requests.append(fake.RecordedRequest(raw, parsed, dict(request.headers)))
        try:
            body = _check(request, state, parsed)
            if state.fail_status is not None:
                raise AnthropicError(state.fail_status, "The fake upstream was told to fail.")
            return fake.scripted(state) or await answer(state, body)
        except AnthropicError as exc:
            return exc.response()

    return messages
