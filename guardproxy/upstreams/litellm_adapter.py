"""Upstreams that are not OpenAI-compatible (Anthropic, Bedrock, Vertex…), through litellm.

litellm is imported on first use only: importing it costs seconds and ~200 MB.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from guardproxy.api.conversation import Conversation
from guardproxy.api.sse import DONE, encode_event
from guardproxy.config import UpstreamSettings
from guardproxy.errors import UpstreamError, UpstreamTimeout
from guardproxy.upstreams.base import UpstreamReply

Completion = Callable[..., Awaitable[Any]]


def _import_acompletion() -> Completion:
    try:
        import litellm
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UpstreamError(
            "This upstream needs litellm: pip install 'guardproxy[litellm]'."
        ) from exc
    acompletion: Completion = litellm.acompletion
    return acompletion


class LitellmUpstream:
    def __init__(self, settings: UpstreamSettings, completion: Completion | None = None) -> None:
        assert settings.litellm_model is not None
        self.settings = settings
        self.model = settings.litellm_model
        self._completion = completion

    async def send(
        self, request: Conversation, body: bytes, headers: dict[str, str]
    ) -> UpstreamReply:
        fields = json.loads(body)
        fields.pop("model", None)
        kwargs = {**fields, **self.settings.litellm_params, "model": self.model}
        if self.settings.api_key:
            kwargs["api_key"] = self.settings.api_key
        try:
            result = await self._acompletion()(**kwargs)
        except Exception as exc:  # litellm maps every provider error onto its own classes
            return _error_reply(exc)
        if request.stream:
            events = _sse(result)
            return UpstreamReply(
                200, stream=events, aclose=_closer(events, result), content_type="text/event-stream"
            )
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

    def _acompletion(self) -> Completion:
        if self._completion is None:
            self._completion = _import_acompletion()
        return self._completion


async def _sse(stream: Any) -> AsyncGenerator[bytes]:
    try:
        async for chunk in stream:
            yield encode_event(_as_dict(chunk))
    except Exception as exc:  # a provider error mid-stream, in litellm's classes
        raise UpstreamError(f"The upstream stream failed: {type(exc).__name__}") from exc
    yield encode_event(DONE)


def _closer(events: AsyncGenerator[bytes], stream: Any) -> Callable[[], Awaitable[None]]:
    """Closing the reply stops the provider's stream too, so the LLM stops generating."""

    async def close() -> None:
        await events.aclose()
        aclose = getattr(stream, "aclose", None)
        if callable(aclose):
            await aclose()

    return close


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    dumped: dict[str, Any] = obj.model_dump()
    return dumped


def _error_reply(exc: Exception) -> UpstreamReply:
    """litellm exceptions carry the provider's status; anything without one is a bad gateway."""
    if type(exc).__name__ in {"Timeout", "APITimeoutError"}:
        raise UpstreamTimeout(f"The upstream LLM did not answer in time: {exc}") from exc
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int) or not 400 <= status < 600:
        raise UpstreamError(f"The upstream LLM failed: {type(exc).__name__}") from exc
    error = {
        "message": str(getattr(exc, "message", exc)),
        "type": type(exc).__name__,
        "param": None,
        "code": getattr(exc, "code", None),
    }
    return UpstreamReply(status, body=json.dumps({"error": error}).encode())
