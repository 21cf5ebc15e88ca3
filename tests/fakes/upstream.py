"""A fake OpenAI-compatible LLM that speaks the chat-completions wire format exactly, in vLLM's
stream framing (the default) or OpenAI's.

Run as a process for benchmarks:
    python -m tests.fakes.upstream --port P [--ttft-s X --token-interval-s Y --reply-tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.server import serve

DEFAULT_REPLY = "Hello! I am a fake language model. How can I help you today?"
DEFAULT_MODEL = "fake-llm"
TOKEN_PATTERN = re.compile(r"\S+\s*|\s+")
DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as it arrived: raw body, parsed JSON (None if not JSON), lowercase headers."""

    body: bytes
    json: Any
    headers: dict[str, str]


@dataclass
class FakeUpstreamState:
    """Behaviour knobs and observations of one fake upstream; tests may change knobs live."""

    reply: str = DEFAULT_REPLY
    replies: dict[str, str] = field(default_factory=dict)
    ttft_s: float = 0.0
    token_interval_s: float = 0.0
    fail_status: int | None = None
    api_key: str | None = None
    models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])
    requests: list[RecordedRequest] = field(default_factory=list)
    # Scripted answers beyond plain text: `deltas` replaces a stream's content deltas (e.g.
    # tool calls or reasoning_content), `message` a non-streamed answer's message fields.
    deltas: list[dict[str, Any]] | None = None
    message: dict[str, Any] | None = None
    ignore_stream: bool = False  # answer stream requests with a plain JSON completion
    # The Responses and Messages fakes answer with this tool call (name, JSON arguments).
    tool_call: tuple[str, str] | None = None
    framing: str = "vllm"  # or "openai": see _Stream
    # Any API: answer with exactly this status, content type and body (a list of chunks is
    # streamed as it is), whatever was asked: a maximal or malformed answer, byte for byte.
    raw_reply: tuple[int, str, bytes | list[bytes]] | None = None
    open_streams: int = 0
    streams_closed_early: int = 0
    streams_completed: int = 0


class OpenAIError(Exception):
    """An error this fake answers with OpenAI's error body."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        kind = "requests" if self.status == 429 else kind
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status)


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def count_words(text: str) -> int:
    return len(text.split())


def message_text(message: Any) -> str:
    """The text of a chat message whose content is a string or a list of content parts."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict))
        return "\n".join(text for text in texts if isinstance(text, str))
    return ""


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    model: str, content: str, prompt_tokens: int, finish_reason: str = "stop"
) -> dict[str, Any]:
    """A complete non-streamed `chat.completion` object answering `content`."""
    message = {"role": "assistant", "content": content, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage(prompt_tokens, count_words(content)),
    }


async def read_json(request: Request) -> tuple[bytes, Any]:
    """The raw body and its parsed JSON (None when it is not JSON)."""
    body = await request.body()
    try:
        return body, json.loads(body)
    except ValueError:
        return body, None


def check_auth(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer "):
        raise OpenAIError(401, "You didn't provide an API key.")
    if header.removeprefix("Bearer ") != api_key:
        raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")


def _check_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise OpenAIError(400, "We could not parse the JSON body of your request.")
    if not isinstance(body.get("model"), str):
        raise OpenAIError(400, "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        message = "Invalid 'messages': expected a non-empty array."
        raise OpenAIError(400, message, param="messages", code="invalid_value")
    return body


def _pick_reply(state: FakeUpstreamState, messages: list[Any]) -> str:
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return pick_reply(state, message_text(users[-1]) if users else "")


def pick_reply(state: FakeUpstreamState, last_user_text: str) -> str:
    matches = (reply for key, reply in state.replies.items() if key in last_user_text)
    return next(matches, state.reply)


def fragments(arguments: str, size: int = 7) -> list[str]:
    """A tool call's JSON arguments cut into pieces, as models stream them."""
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


class _Stream:
    """Builds the SSE events of one streamed completion, byte for byte in one of two framings.

    `vllm` (the default; seen on vLLM 0.32, vllm-cpu.md §4b): `finish_reason` rides on the last
    content chunk, non-final chunks carry no `usage` key, `system_fingerprint` is on the final
    chunk only. `openai`: a separate empty-delta finish chunk, `usage: null` on every chunk
    when usage is asked for. vLLM's `continuous_usage_stats` puts the usage so far on every
    chunk (`running`: the prompt's tokens).
    """

    def __init__(
        self, model: str, include_usage: bool, framing: str = "vllm", running: int | None = None
    ) -> None:
        self.base = {
            "id": new_completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self.include_usage = include_usage
        self.framing = framing
        self.running, self.generated = running, 0

    def event(self, choices: list[dict[str, Any]]) -> bytes:
        chunk: dict[str, Any] = {**self.base, "choices": choices}
        if self.framing == "openai" and self.include_usage:
            chunk["usage"] = None
        if self.running is not None:
            self.generated += any(choice["delta"].get("content") for choice in choices)
            chunk["usage"] = usage(self.running, self.generated)
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        if self.framing == "vllm" and finish_reason is not None:
            choice["stop_reason"] = None
        return self.event([choice])

    def body(self, deltas: list[dict[str, Any]]) -> list[bytes]:
        """Every event after the role chunk and before the usage chunk."""
        if self.framing == "openai":
            return [*(self.delta(d) for d in deltas), self.delta({}, finish_reason="stop")]
        last = deltas[-1] if deltas else {"content": ""}
        return [*(self.delta(d) for d in deltas[:-1]), self.delta(last, finish_reason="stop")]

    def usage_event(self, usage_info: dict[str, int]) -> bytes:
        chunk = {**self.base, "choices": [], "usage": usage_info}
        if self.framing == "vllm":
            chunk["system_fingerprint"] = "fake-vllm"
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


async def _stream_events(
    state: FakeUpstreamState, stream: _Stream, tokens: list[str], prompt_tokens: int
) -> AsyncGenerator[bytes, None]:
    state.open_streams += 1
    finished = False
    try:
        await asyncio.sleep(state.ttft_s)
        yield stream.delta({"role": "assistant", "content": ""})
        deltas = state.deltas or [{"content": token} for token in tokens]
        for index, event in enumerate(stream.body(deltas)):
            if 0 < index < len(deltas):
                await asyncio.sleep(state.token_interval_s)
            yield event
        if stream.include_usage:
            yield stream.usage_event(usage(prompt_tokens, len(tokens)))
        yield DONE_EVENT
        finished = True
    finally:
        state.open_streams -= 1
        if finished:
            state.streams_completed += 1
        else:
            state.streams_closed_early += 1


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its generator, so its `finally` runs at once.

    Starlette cancels the sender when the client disconnects; a generator parked at `yield`
    would otherwise be closed only whenever it is garbage-collected.
    """

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        super().__init__(events, media_type="text/event-stream")
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.events.aclose()


def scripted(state: FakeUpstreamState) -> Response | None:
    """The `raw_reply` the test set, if any."""
    if state.raw_reply is None:
        return None
    status, content_type, body = state.raw_reply
    if isinstance(body, bytes):
        return Response(body, status, media_type=content_type)
    chunks = list(body)

    async def stream() -> AsyncGenerator[bytes, None]:
        for chunk in chunks:
            yield chunk

    return StreamingResponse(stream(), status, media_type=content_type)


async def _complete(state: FakeUpstreamState, body: dict[str, Any]) -> Response:
    reply = _pick_reply(state, body["messages"])
    tokens = TOKEN_PATTERN.findall(reply)
    prompt_tokens = sum(count_words(message_text(m)) for m in body["messages"])
    if body.get("stream") is True and not state.ignore_stream:
        options = body.get("stream_options")
        options = options if isinstance(options, dict) else {}
        running = prompt_tokens if options.get("continuous_usage_stats") is True else None
        include_usage = options.get("include_usage") is True
        stream = _Stream(body["model"], include_usage, state.framing, running)
        return ClosingStreamingResponse(_stream_events(state, stream, tokens, prompt_tokens))
    # A non-streamed answer arrives when the whole generation would have finished.
    await asyncio.sleep(state.ttft_s + state.token_interval_s * max(len(tokens) - 1, 0))
    completion = chat_completion(body["model"], reply, prompt_tokens)
    completion["choices"][0]["message"].update(state.message or {})
    return JSONResponse(completion)


def create_fake_upstream(state: FakeUpstreamState) -> Starlette:
    """The fake LLM's ASGI app: POST /v1/chat/completions, /v1/responses and /v1/messages
    (Anthropic's), GET /v1/models."""
    from tests.fakes import messages_api, responses_api

    async def chat_completions(request: Request) -> Response:
        body, parsed = await read_json(request)
        state.requests.append(RecordedRequest(body, parsed, dict(request.headers)))
        try:
            check_auth(request, state.api_key)
            if state.fail_status is not None:
                raise OpenAIError(state.fail_status, "The fake upstream was told to fail.")
            return scripted(state) or await _complete(state, _check_body(parsed))
        except OpenAIError as exc:
            return exc.response()

    async def list_models(request: Request) -> Response:
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "fake"}
            for name in state.models
        ]
        return JSONResponse({"object": "list", "data": data})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/responses", responses_api.create_endpoint(state), methods=["POST"]),
            Route("/v1/messages", messages_api.create_endpoint(state), methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-s", type=float, default=0.0)
    parser.add_argument("--token-interval-s", type=float, default=0.0)
    parser.add_argument("--reply-tokens", type=int, default=None)
    parser.add_argument(
        "--reply-when", action="append", default=[], metavar="KEY=TEXT",
        help="answer TEXT when the last user turn contains KEY",
    )  # fmt: skip
    args = parser.parse_args()
    state = FakeUpstreamState(ttft_s=args.ttft_s, token_interval_s=args.token_interval_s)
    state.replies = dict(rule.split("=", 1) for rule in args.reply_when)
    if args.reply_tokens is not None:
        state.reply = " ".join(f"token{index}" for index in range(args.reply_tokens))
    serve(create_fake_upstream(state), args.port)


if __name__ == "__main__":
    main()
