"""What the client receives, whatever the API: errors, blocks and answers with verdicts.

This is the one place where exceptions become HTTP status codes. The shapes of bodies and
events are each codec's; this module picks which one and when.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from guardproxy.core.actions import Action, Outcome
from guardproxy.core.conversation import Conversation
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
    UpstreamUnavailable,
)
from guardproxy.pipeline.codec import Codec, StreamCodec
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.usage import usage_of
from guardproxy.policy.model import DEFAULT_REFUSAL, TenantPolicy
from guardproxy.policy.refusals import tenant_refusals

# (status, OpenAI error type, code), most specific class first.
ERROR_STATUS: tuple[tuple[type[GuardproxyError], int, str, str | None], ...] = (
    (PayloadTooLarge, 413, "invalid_request_error", "request_too_large"),
    (RequestError, 400, "invalid_request_error", None),
    (AuthenticationError, 401, "invalid_request_error", "invalid_api_key"),
    (GuardOverloaded, 503, "server_error", "guard_overloaded"),
    (GuardError, 503, "server_error", "guard_unavailable"),
    (UpstreamTimeout, 504, "server_error", "upstream_timeout"),
    (UpstreamUnavailable, 503, "server_error", "upstream_unavailable"),
    (UpstreamError, 502, "server_error", "upstream_error"),
    (ClientDisconnected, 499, "invalid_request_error", "client_disconnected"),
)
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def status_of(exc: GuardproxyError) -> tuple[int, str, str | None]:
    for cls, status, type_, code in ERROR_STATUS:
        if isinstance(exc, cls):
            return status, type_, code
    return 500, "server_error", "internal_error"


def error_response(exc: GuardproxyError, exchange: Exchange, codec: Codec) -> JSONResponse:
    status, type_, code = status_of(exc)
    param = exc.param if isinstance(exc, RequestError) else None
    # fail: no verdict (fail closed); reject: the request itself was refused; error: the
    # upstream failed. Never "allow" for an answer that carries no completion.
    action: Outcome = (
        "fail" if isinstance(exc, GuardError) else "reject" if status < 500 else "error"
    )
    exchange.conclude(status, action, str(exc))
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


def blocked_response(
    codec: Codec,
    request: Conversation,
    exchange: Exchange,
    tenant: TenantPolicy,
    usage: Any = None,
) -> Response:
    """The tenant's block shape in the request's API: a refusal (200) or an error (400).
    `usage`: a whole answer's, as the upstream sent it; a stream cut off before its first
    release left what it consumed on the exchange already."""
    exchange.usage = usage_of(usage) or exchange.usage
    if tenant.on_block == "error":
        exchange.conclude(400, "block")
        body = {**codec.content_filter_error(exchange), "guardproxy": exchange.client_view()}
        return JSONResponse(body, 400, headers=exchange.headers())
    exchange.conclude(200, "block")
    refusal = refusal_for(exchange, tenant)
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


def with_verdicts(answer: dict[str, Any], exchange: Exchange) -> Response:
    """The upstream's answer unchanged, plus the `guardproxy` object."""
    answer = {**answer, "guardproxy": exchange.client_view()}
    return JSONResponse(answer, exchange.status or 200, headers=exchange.headers())


def cut_off_events(
    shapes: StreamCodec,
    exchange: Exchange,
    tenant: TenantPolicy,
    action: Action,
    error: str | None,
) -> list[bytes]:
    """How a stream already under way ends when a check fails: never retract, just stop,
    with a guard error (FAIL), or the tenant's block shape, which tells what was consumed."""
    exchange.usage = shapes.consumed()
    if action is Action.FAIL:
        exchange.conclude(503, "fail")
        failure = GuardOverloaded if exchange.output.overloaded else GuardUnavailable
        return [shapes.error_event(failure(error or "guard failed"))]
    exchange.conclude(exchange.status or 200, "block")  # 200 left with the first window
    if tenant.on_block == "error":
        return shapes.block_error_events(exchange)
    return shapes.refusal_after(exchange, refusal_for(exchange, tenant))


def refusal_for(exchange: Exchange, tenant: TenantPolicy) -> str:
    """The tenant's refusal in the request's language, which the audit record names. The
    region a request asked for is the last of its regions and the most specific, so first."""
    refusals = exchange.refusals or tenant_refusals(tenant.refusal_message, {}, {}, DEFAULT_REFUSAL)
    language, text = refusals.choose(exchange.accept_language, exchange.regions[::-1])
    exchange.refusal_language = language
    return text
