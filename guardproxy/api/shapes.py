"""What the client receives, whatever the API: errors, blocks and answers with verdicts.

This is the one place where exceptions become HTTP status codes. The shapes of bodies and
events are each codec's; this module picks which one and when.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any, Protocol

from starlette.responses import JSONResponse, Response, StreamingResponse

from guardproxy.api.conversation import Codec, Conversation
from guardproxy.api.sse import encode_event
from guardproxy.decision import Action
from guardproxy.errors import (
    AuthenticationError,
    ClientDisconnected,
    GuardError,
    GuardOverloaded,
    GuardproxyError,
    GuardUnavailable,
    PayloadTooLarge,
    RequestError,
    UpstreamError,
    UpstreamTimeout,
)
from guardproxy.observe.exchange import Exchange
from guardproxy.policy.model import TenantPolicy

# (status, OpenAI error type, code), most specific class first.
ERROR_STATUS: tuple[tuple[type[GuardproxyError], int, str, str | None], ...] = (
    (PayloadTooLarge, 413, "invalid_request_error", "request_too_large"),
    (RequestError, 400, "invalid_request_error", None),
    (AuthenticationError, 401, "invalid_request_error", "invalid_api_key"),
    (GuardOverloaded, 503, "server_error", "guard_overloaded"),
    (GuardError, 503, "server_error", "guard_unavailable"),
    (UpstreamTimeout, 504, "server_error", "upstream_timeout"),
    (UpstreamError, 502, "server_error", "upstream_error"),
    (ClientDisconnected, 499, "invalid_request_error", "client_disconnected"),
)
# Clients read blocks by these words too: litellm maps "rejected as a result of the safety
# system" (and `content_policy_violation`) to ContentPolicyViolationError, also mid-stream,
# where only the message reaches it.
BLOCKED_MESSAGE = (
    "The request was rejected as a result of the safety system: it was blocked by the "
    "content policy (content_policy_violation)."
)
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def status_of(exc: GuardproxyError) -> tuple[int, str, str | None]:
    for cls, status, type_, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, type_, code
    return 500, "server_error", "internal_error"


def error_response(exc: GuardproxyError, exchange: Exchange, codec: Codec) -> JSONResponse:
    status, type_, code = status_of(exc)
    param = exc.param if isinstance(exc, RequestError) else None
    exchange.status, exchange.error = status, str(exc)
    # fail: no verdict (fail closed); reject: the request itself was refused; error: the
    # upstream failed. Never "allow" for an answer that carries no completion.
    exchange.action = (
        "fail" if isinstance(exc, GuardError) else "reject" if status < 500 else "error"
    )
    body = codec.error(public_message(exc), status, type_, param, code)
    if exchange.tenant is not None:
        body["guardproxy"] = exchange.client_view()
    headers = exchange.headers()
    if isinstance(exc, GuardOverloaded):
        headers["retry-after"] = str(max(math.ceil(exc.retry_after_s), 1))
    return JSONResponse(body, status, headers=headers)


def public_message(exc: GuardproxyError) -> str:
    if isinstance(exc, GuardOverloaded):
        return "The content-safety check is at capacity; retry after the Retry-After delay."
    if isinstance(exc, GuardError):
        return "The content-safety check is unavailable, so the request was not processed."
    return str(exc)


def content_filter_error(exchange: Exchange, param: str) -> dict[str, Any]:
    """A block as an OpenAI-shaped error, after Azure OpenAI's content-filter convention
    (`code: content_filter`, an `innererror` with the filter result per category). Its inner
    code is OpenAI's `content_policy_violation`, which litellm maps to
    ContentPolicyViolationError, so a litellm client's `content_policy_fallbacks` trigger."""
    body = error_body(BLOCKED_MESSAGE, "invalid_request_error", param, "content_filter")
    categories = (*exchange.input.categories, *exchange.output.categories)
    result = {name: {"filtered": True} for name in dict.fromkeys(categories)}
    body["error"]["innererror"] = {
        "code": "content_policy_violation",
        "content_filter_result": result,
    }
    return body


def blocked_response(
    request: Conversation, exchange: Exchange, on_block: str, refusal: str, usage: Any = None
) -> Response:
    """The tenant's block shape in the request's API: a refusal (200) or an error (400)."""
    codec = request.codec
    exchange.action = "block"
    if on_block == "error":
        exchange.status = 400
        body = {**codec.content_filter_error(exchange), "guardproxy": exchange.client_view()}
        return JSONResponse(body, 400, headers=exchange.headers())
    exchange.status = 200
    if request.stream:
        return StreamingResponse(
            _each(codec.refusal_events(request, exchange, refusal)),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **exchange.headers()},
        )
    body = codec.refusal(request, exchange, refusal, usage)
    return JSONResponse(body, headers=exchange.headers())


async def _each(events: list[bytes]) -> AsyncIterator[bytes]:
    for event in events:
        yield event


def stream_error_event(exc: GuardproxyError) -> bytes:
    """A failure once a 200 OpenAI-shaped stream has begun: an error event, and no [DONE]."""
    _, type_, code = status_of(exc)
    return encode_event(error_body(public_message(exc), type_, None, code))


def with_verdicts(answer: dict[str, Any], exchange: Exchange) -> Response:
    """The upstream's answer unchanged, plus the `guardproxy` object."""
    answer = {**answer, "guardproxy": exchange.client_view()}
    return JSONResponse(answer, exchange.status or 200, headers=exchange.headers())


class CutOffShapes(Protocol):
    """The events a stream codec ends a stream with, once it has begun."""

    def error_event(self, exc: GuardproxyError) -> bytes: ...

    def block_error_events(self, exchange: Exchange) -> list[bytes]: ...

    def refusal_after(self, exchange: Exchange, refusal: str) -> list[bytes]: ...


def cut_off_events(
    shapes: CutOffShapes,
    exchange: Exchange,
    tenant: TenantPolicy,
    action: Action,
    error: str | None,
) -> list[bytes]:
    """How a stream already under way ends when a check fails: never retract, just stop,
    with a guard error (FAIL), or the tenant's block shape."""
    if action is Action.FAIL:
        exchange.action, exchange.status = "fail", 503
        failure = GuardOverloaded if exchange.output.overloaded else GuardUnavailable
        return [shapes.error_event(failure(error or "guard failed"))]
    exchange.action = "block"
    if tenant.on_block == "error":
        return shapes.block_error_events(exchange)
    return shapes.refusal_after(exchange, tenant.refusal_message)
