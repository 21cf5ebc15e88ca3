"""What the client receives: OpenAI-shaped completions, refusals, SSE and errors.

This is the one place where exceptions become HTTP status codes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from guardproxy.api.chat import ChatRequest
from guardproxy.api.sse import DONE, encode_event
from guardproxy.decision import Action
from guardproxy.errors import (
    AuthenticationError,
    ClientDisconnected,
    GuardError,
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
NO_USAGE = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def error_body(message: str, type_: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def status_of(exc: GuardproxyError) -> tuple[int, str, str | None]:
    for cls, status, type_, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, type_, code
    return 500, "server_error", "internal_error"


def error_response(exc: GuardproxyError, exchange: Exchange) -> JSONResponse:
    status, type_, code = status_of(exc)
    param = exc.param if isinstance(exc, RequestError) else None
    exchange.status, exchange.error = status, str(exc)
    # fail: no verdict (fail closed); reject: the request itself was refused; error: the
    # upstream failed. Never "allow" for an answer that carries no completion.
    exchange.action = (
        "fail" if isinstance(exc, GuardError) else "reject" if status < 500 else "error"
    )
    message = _public_message(exc)
    body = error_body(message, type_, param, code)
    if exchange.tenant is not None:
        body["guardproxy"] = exchange.client_view()
    return JSONResponse(body, status, headers=exchange.headers())


def _public_message(exc: GuardproxyError) -> str:
    if isinstance(exc, GuardError):
        return "The content-safety check is unavailable, so the request was not processed."
    return str(exc)


def content_filter_error(exchange: Exchange) -> dict[str, Any]:
    """A block as an error, after Azure OpenAI's content-filter convention (`code:
    content_filter`, an `innererror` with the filter result per category). Its inner code is
    OpenAI's `content_policy_violation`, which litellm maps to ContentPolicyViolationError,
    so a litellm client's `content_policy_fallbacks` trigger."""
    body = error_body(BLOCKED_MESSAGE, "invalid_request_error", "messages", "content_filter")
    categories = (*exchange.input.categories, *exchange.output.categories)
    result = {name: {"filtered": True} for name in dict.fromkeys(categories)}
    body["error"]["innererror"] = {
        "code": "content_policy_violation",
        "content_filter_result": result,
    }
    return body


def blocked_response(
    request: ChatRequest, exchange: Exchange, on_block: str, refusal: str, usage: Any = None
) -> Response:
    """The tenant's block shape: a refusal completion (200) or a content_filter error (400)."""
    exchange.action = "block"
    if on_block == "error":
        exchange.status = 400
        body = {**content_filter_error(exchange), "guardproxy": exchange.client_view()}
        return JSONResponse(body, 400, headers=exchange.headers())
    exchange.status = 200
    if request.stream:
        return StreamingResponse(
            _refusal_events(request, exchange, refusal),
            media_type="text/event-stream",
            headers={**SSE_HEADERS, **exchange.headers()},
        )
    return JSONResponse(
        _refusal_completion(request, exchange, refusal, usage), headers=exchange.headers()
    )


def _refusal_completion(
    request: ChatRequest, exchange: Exchange, refusal: str, usage: Any
) -> dict[str, Any]:
    message = {"role": "assistant", "content": None, "refusal": None}
    message[refusal_field(request)] = refusal
    return {
        "id": f"chatcmpl-gp-{exchange.request_id}",
        "object": "chat.completion",
        "created": int(exchange.started),
        "model": request.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"}
        ],
        "usage": usage or NO_USAGE,
        "guardproxy": exchange.client_view(),
    }


def refusal_events(
    request: ChatRequest,
    exchange: Exchange,
    refusal: str,
    identity: dict[str, Any] | None = None,
    started: bool = False,
) -> list[bytes]:
    """A refusal told as OpenAI streams an answer: the role chunk (unless the stream has
    `started`), the text, a `content_filter` finish chunk, the usage chunk when the client
    asked for one, `[DONE]`. `identity` keeps the upstream stream's `id` and `created`."""
    base = {
        "id": f"chatcmpl-gp-{exchange.request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": request.model,
        **{k: v for k, v in (identity or {}).items() if k in ("id", "created", "model")},
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return encode_event({**base, "choices": [choice]})

    events = [] if started else [chunk({"role": "assistant", "content": ""})]
    events += [chunk({refusal_field(request): refusal})]
    finish = {**base, "choices": [_finish_choice()], "guardproxy": exchange.client_view()}
    events.append(encode_event(finish))
    if _wants_usage(request):
        events.append(encode_event({**base, "choices": [], "usage": NO_USAGE}))
    return [*events, encode_event(DONE)]


def refusal_field(request: ChatRequest) -> str:
    """Where the refusal text goes: `content`, or `refusal` for structured outputs, as OpenAI
    does, so a client that parses the content as JSON (`response_format=Model`) is not handed
    prose and raises its content-filter error instead."""
    response_format = request.body.get("response_format")
    structured = isinstance(response_format, dict) and response_format.get("type") == "json_schema"
    return "refusal" if structured else "content"


def _finish_choice() -> dict[str, Any]:
    return {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "content_filter"}


def _wants_usage(request: ChatRequest) -> bool:
    options = request.body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def _refusal_events(
    request: ChatRequest, exchange: Exchange, refusal: str
) -> AsyncIterator[bytes]:
    for event in refusal_events(request, exchange, refusal):
        yield event


def blocked_events(
    request: ChatRequest,
    exchange: Exchange,
    action: Action,
    tenant: TenantPolicy,
    error: str | None,
    identity: dict[str, Any] | None = None,
) -> list[bytes]:
    """How a stream already under way ends when a check fails: never retract, just stop."""
    if action is Action.FAIL:
        exchange.action, exchange.status = "fail", 503
        return [stream_error_event(GuardUnavailable(error or "guard failed"))]
    exchange.action = "block"
    if tenant.on_block == "error":
        body = {**content_filter_error(exchange), "guardproxy": exchange.client_view()}
        return [encode_event(body)]
    return refusal_events(request, exchange, tenant.refusal_message, identity, started=True)


def stream_error_event(exc: GuardproxyError) -> bytes:
    """How a failure is told once a 200 stream has begun: an error event, and no [DONE]."""
    _, type_, code = status_of(exc)
    return encode_event(error_body(_public_message(exc), type_, None, code))


def completion_with_verdicts(completion: dict[str, Any], exchange: Exchange) -> Response:
    """The upstream's answer unchanged, plus the `guardproxy` object."""
    completion = {**completion, "guardproxy": exchange.client_view()}
    return JSONResponse(completion, exchange.status or 200, headers=exchange.headers())
