"""The fake LLM's `POST /v1/responses`: OpenAI's Responses API wire format, whole and streamed.

A stream is the documented sequence of semantic events, each framed with its `event:` line and
a `sequence_number`: `response.created`, `response.in_progress`, `response.output_item.added`,
`response.content_part.added`, `response.output_text.delta`…, `response.output_text.done`,
`response.content_part.done`, `response.output_item.done`, `response.completed` (with usage).
A tool call (`state.tool_call`) streams as `response.function_call_arguments.delta` fragments.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes import upstream as fake


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def input_text(value: Any) -> list[str]:
    """The user texts of `input`: the string itself, or each user message item's text."""
    if isinstance(value, str):
        return [value]
    texts = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [p["text"] for p in content if isinstance(p, dict) and "text" in p]
    return texts


def _response(body: dict[str, Any], status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": body.get("tools", []),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def _message(text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "status": status,
        "content": [part] if status == "completed" else [],
        "role": "assistant",
    }


def _call(name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": f"fc_{uuid.uuid4().hex}",
        "type": "function_call",
        "status": status,
        "arguments": arguments if status == "completed" else "",
        "call_id": f"call_{uuid.uuid4().hex[:24]}",
        "name": name,
    }


class _Events:
    """Frames events as the Responses API does: an `event:` line and a `sequence_number`."""

    def __init__(self) -> None:
        self.sequence = -1

    def __call__(self, kind: str, **fields: Any) -> bytes:
        self.sequence += 1
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        data = json.dumps(payload, separators=(",", ":"))
        return f"event: {kind}\ndata: {data}\n\n".encode()


async def _text_events(
    state: fake.FakeUpstreamState, event: _Events, tokens: list[str], out: list[Any]
) -> AsyncGenerator[bytes, None]:
    item = _message("", status="in_progress")
    at = {"item_id": item["id"], "output_index": 0}
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    yield event("response.output_item.added", output_index=0, item=item)
    yield event("response.content_part.added", **at, content_index=0, part=part)
    for index, token in enumerate(tokens):
        if index:
            await asyncio.sleep(state.token_interval_s)
        yield event("response.output_text.delta", **at, content_index=0, delta=token, logprobs=[])
    text = "".join(tokens)
    yield event("response.output_text.done", **at, content_index=0, text=text, logprobs=[])
    yield event("response.content_part.done", **at, content_index=0, part={**part, "text": text})
    done = {**item, "status": "completed", "content": [{**part, "text": text}]}
    out.append(done)
    yield event("response.output_item.done", output_index=0, item=done)


async def _call_events(
    state: fake.FakeUpstreamState, event: _Events, name: str, arguments: str, out: list[Any]
) -> AsyncGenerator[bytes, None]:
    item = _call(name, arguments, status="in_progress")
    at = {"item_id": item["id"], "output_index": 0}
    yield event("response.output_item.added", output_index=0, item=item)
    for fragment in fake.fragments(arguments):
        await asyncio.sleep(state.token_interval_s)
        yield event("response.function_call_arguments.delta", **at, delta=fragment)
    yield event("response.function_call_arguments.done", **at, arguments=arguments)
    done = {**item, "status": "completed", "arguments": arguments}
    out.append(done)
    yield event("response.output_item.done", output_index=0, item=done)


async def _stream(
    state: fake.FakeUpstreamState, body: dict[str, Any], tokens: list[str], prompt: int
) -> AsyncGenerator[bytes, None]:
    event, output = _Events(), list[Any]()
    state.open_streams += 1
    finished = False
    try:
        start = _response(body, "in_progress", [], None)
        yield event("response.created", response=start)
        yield event("response.in_progress", response=start)
        await asyncio.sleep(state.ttft_s)
        items = (
            _call_events(state, event, *state.tool_call, output)
            if state.tool_call is not None
            else _text_events(state, event, tokens, output)
        )
        async for raw in items:
            yield raw
        done = _response(body, "completed", output, _usage(prompt, len(tokens)))
        yield event("response.completed", response={**done, "id": start["id"]})  # one response
        finished = True
    finally:
        state.open_streams -= 1
        state.streams_completed += finished
        state.streams_closed_early += not finished


def _check(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise fake.OpenAIError(400, "We could not parse the JSON body of your request.")
    if not isinstance(body.get("model"), str):
        raise fake.OpenAIError(400, "Missing required parameter: 'model'.", param="model")
    if "input" not in body and "previous_response_id" not in body:
        raise fake.OpenAIError(400, "Missing required parameter: 'input'.", param="input")
    return body


async def answer(state: fake.FakeUpstreamState, body: dict[str, Any]) -> Response:
    texts = input_text(body.get("input"))
    reply = fake.pick_reply(state, texts[-1] if texts else "")
    tokens = fake.TOKEN_PATTERN.findall(reply)
    prompt = sum(fake.count_words(text) for text in texts)
    if body.get("stream") is True:
        return fake.ClosingStreamingResponse(_stream(state, body, tokens, prompt))
    await asyncio.sleep(state.ttft_s + state.token_interval_s * max(len(tokens) - 1, 0))
    item = _call(*state.tool_call) if state.tool_call is not None else _message(reply)
    return JSONResponse(_response(body, "completed", [item], _usage(prompt, len(tokens))))


def create_endpoint(state: fake.FakeUpstreamState) -> Any:
    """POST /v1/responses."""

    async def responses(request: Request) -> Response:
        raw, parsed = await fake.read_json(request)
        state.requests.append(fake.RecordedRequest(raw, parsed, dict(request.headers)))
        try:
            fake.check_auth(request, state.api_key)
            if state.fail_status is not None:
                raise fake.OpenAIError(state.fail_status, "The fake upstream was told to fail.")
            return fake.scripted(state) or await answer(state, _check(parsed))
        except fake.OpenAIError as exc:
            return exc.response()

    return responses
