"""Upstreams that are not OpenAI-compatible (Anthropic, Bedrock, Vertex…), through litellm.

litellm is imported on first use only: importing it costs seconds and ~200 MB.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from guardproxy.config import UpstreamSettings
from guardproxy.core.conversation import Conversation
from guardproxy.core.sse import DONE, encode_event, encode_typed
from guardproxy.errors import UpstreamError, UpstreamTimeout
from guardproxy.upstreams.base import UpstreamReply
from guardproxy.upstreams.params import client_params

logger = logging.getLogger(__name__)

Completion = Callable[..., Awaitable[Any]]
SSE = "text/event-stream"


def _import_call(api: str) -> Completion:
    """litellm's entry point for one wire API: Chat Completions, Responses, or Anthropic
    Messages (which litellm translates for any provider)."""
    try:
        import litellm
        from litellm import anthropic_interface
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UpstreamError(
            "This upstream needs litellm: pip install 'guardproxy[litellm]'."
        ) from exc
    calls: dict[str, Completion] = {
        "chat.completions": litellm.acompletion,
        "responses": litellm.aresponses,
        "messages": anthropic_interface.messages.acreate,
    }
    return calls[api]


class LitellmUpstream:
    def __init__(
        self,
        settings: UpstreamSettings,
        completion: Completion | None = None,
        calls: dict[str, Completion] | None = None,
    ) -> None:
        """`completion` (chat) and `calls` (per API) replace litellm's functions in tests."""
        assert settings.litellm_model is not None
        self.settings = settings
        self.model = settings.litellm_model
        self._calls = dict(calls or {})
        if completion is not None:
            self._calls["chat.completions"] = completion

    def url(self, request: Conversation) -> None:
        return None  # litellm resolves the provider's URL itself

    async def send(
        self, request: Conversation, body: bytes, headers: dict[str, str]
    ) -> UpstreamReply:
        api = request.codec.api
        kwargs = self._kwargs(api, json.loads(body))
        whole_stream = api == "messages" and request.stream
        if whole_stream:  # see `_message_events`
            kwargs["stream"] = False
        try:
            result = await self._call(api)(**kwargs)
        except Exception as exc:  # litellm maps every provider error onto its own classes
            return _error_reply(exc)
        if whole_stream:
            events = _message_events(_as_dict(result))
            return UpstreamReply(200, stream=events, aclose=StreamCloser(events), content_type=SSE)
        if request.stream:
            events = _sse(result) if api == "chat.completions" else _typed_sse(result)
            closer = StreamCloser(events, result)
            return UpstreamReply(200, stream=events, aclose=closer, content_type=SSE)
        return UpstreamReply(200, body=json.dumps(_as_dict(result)).encode())

    async def list_models(self) -> UpstreamReply:
        model = {
            "id": self.model,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "litellm",
        }
        return UpstreamReply(200, body=json.dumps({"object": "list", "data": [model]}).encode())

    async def probe(self) -> str | None:
        return None  # a provider API is not probed: it would cost a billed call

    def _kwargs(self, api: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The client's model parameters, then the config's: the host, key, provider and
        headers are the config's alone (see `params.py`)."""
        kwargs = {**client_params(api, fields), **self.settings.litellm_params, "model": self.model}
        if self.settings.api_key:
            kwargs["api_key"] = self.settings.api_key
        return kwargs

    def _call(self, api: str) -> Completion:
        if api not in self._calls:
            self._calls[api] = _import_call(api)
        return self._calls[api]


async def _sse(stream: Any) -> AsyncGenerator[bytes]:
    try:
        async for chunk in stream:
            yield encode_event(_as_dict(chunk))
    except Exception as exc:  # a provider error mid-stream, in litellm's classes
        raise _stream_failed(exc) from exc
    yield encode_event(DONE)


async def _message_events(message: dict[str, Any]) -> AsyncGenerator[bytes]:
    """A whole Anthropic message told as its stream events. litellm 1.110.2 streams Messages
    only with its proxy package installed (fastapi, orjson, soundfile, …), so a streamed
    request through litellm is generated whole, then sent as a stream."""
    content = message.get("content") or []
    yield encode_typed({"type": "message_start", "message": {**message, "content": []}})
    for index, block in enumerate(content):
        kind = block.get("type")
        if kind == "tool_use":
            start, delta = {**block, "input": {}}, {"type": "input_json_delta"}
            delta["partial_json"] = json.dumps(block.get("input", {}))
        else:
            start, delta = (
                {**block, "text": ""},
                {"type": "text_delta", "text": block.get("text", "")},
            )
        yield encode_typed({"type": "content_block_start", "index": index, "content_block": start})
        yield encode_typed({"type": "content_block_delta", "index": index, "delta": delta})
        yield encode_typed({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": message.get("stop_reason"), "stop_sequence": None}
    yield encode_typed({"type": "message_delta", "delta": stop, "usage": message.get("usage")})
    yield encode_typed({"type": "message_stop"})


async def _typed_sse(stream: Any) -> AsyncGenerator[bytes]:
    """Responses and Messages events, each named by its `type`; litellm hands them over as
    objects, dicts or already framed bytes."""
    try:
        async for event in stream:
            yield event if isinstance(event, bytes) else encode_typed(_as_dict(event))
    except Exception as exc:  # a provider error mid-stream, in litellm's classes
        raise _stream_failed(exc) from exc


def _stream_failed(exc: Exception) -> UpstreamError:
    """The client reads the error's class; litellm's words (which may name the provider's
    host) go to the log."""
    logger.warning("The upstream stream failed: %r", exc)
    return UpstreamError(f"The upstream stream failed: {type(exc).__name__}", repr(exc))


class StreamCloser:
    """A reply's `aclose`: safe to call twice and from any task. The provider's stream is
    closed first (once), so the LLM stops generating; then the events over it, unless a task
    is inside them right now (a moderator's reader cutting off a stream): that task's
    cancellation ends them, and closing under it would raise."""

    def __init__(self, events: AsyncGenerator[bytes], stream: Any = None) -> None:
        self.events = events
        self.stream = stream

    async def __call__(self) -> None:
        stream, self.stream = self.stream, None
        aclose = getattr(stream, "aclose", None)
        if callable(aclose):
            await _unless_running(aclose())
        await _unless_running(self.events.aclose())


async def _unless_running(closing: Awaitable[None]) -> None:
    try:
        await closing
    except RuntimeError as exc:  # "aclose(): asynchronous generator is already running"
        if "already running" not in str(exc):
            raise


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    dumped: dict[str, Any] = obj.model_dump()
    return dumped


def _error_reply(exc: Exception) -> UpstreamReply:
    """litellm exceptions carry the provider's status; anything without one is a bad gateway."""
    if type(exc).__name__ in {"Timeout", "APITimeoutError"}:
        raise UpstreamTimeout("The upstream LLM did not answer in time.", repr(exc)) from exc
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or not 400 <= status < 600:
        raise UpstreamError(f"The upstream LLM failed: {type(exc).__name__}", repr(exc)) from exc
    message = str(getattr(exc, "message", exc))
    if status >= 500:  # litellm words a connection failure with the provider's address in it
        logger.debug("The upstream LLM failed: %r", exc)
        message = f"The upstream LLM failed: {type(exc).__name__}"
    error = {
        "message": message,
        "type": type(exc).__name__,
        "param": None,
        "code": getattr(exc, "code", None),
    }
    return UpstreamReply(status, body=json.dumps({"error": error}).encode())
