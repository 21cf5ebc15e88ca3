"""The wire APIs' endpoints and the models list: authenticate by proxy key, decode, run the one
pipeline, and always write the audit record (and start the shadow), the client leaving included."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive

from guardproxy.api.chat.codec import CHAT
from guardproxy.errors import ClientDisconnected, GuardproxyError, PayloadTooLarge
from guardproxy.observe.logs import bind as bind_logs
from guardproxy.pipeline.codec import Codec
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.flow import Incoming, handle_chat
from guardproxy.pipeline.replies import error_response
from guardproxy.pipeline.streams import GuardedStream
from guardproxy.server.runtime import Runtime, app_state

REGION_HEADER = "x-guardproxy-region"


def served(codec: Codec) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of one wire API: its codec decodes, the one pipeline serves."""

    async def endpoint(request: Request) -> Response:
        return await _serve(codec, request)

    return endpoint


async def _serve(codec: Codec, request: Request) -> Response:
    runtime = app_state(request.app).runtime
    exchange, span = begin_exchange(runtime, request, codec.api)
    try:
        response = await _handle(codec, runtime, request, exchange)
    except GuardproxyError as exc:
        response = error_response(exc, exchange, codec)
    except BaseException as exc:  # the 500 handler answers; the audit still gets its line
        exchange.conclude(500, error=f"internal error: {type(exc).__name__}")
        await audit_exchange(runtime, exchange, span)
        raise
    if isinstance(response, GuardedStream):
        response.closers.append(lambda: audit_exchange(runtime, exchange, span))
    else:
        await audit_exchange(runtime, exchange, span)
    return response


async def _handle(codec: Codec, runtime: Runtime, request: Request, exchange: Exchange) -> Response:
    tenant, exchange.key_id = runtime.policies.identify(proxy_key(request))
    exchange.tenant = tenant.tenant
    exchange.refusals = runtime.policies.refusals.get(tenant.tenant)
    exchange.accept_language = request.headers.get("accept-language")
    chat = codec.decode(await read_body(request, runtime.settings.max_body_bytes))
    exchange.model, exchange.stream = chat.model, chat.stream
    route = runtime.route_for(tenant)
    forwarded = runtime.settings.upstreams[tenant.upstream].forward_headers
    headers = {name: request.headers[name] for name in forwarded if name in request.headers}
    incoming = Incoming(codec, chat, headers, request.headers.get(REGION_HEADER))
    work = handle_chat(route, incoming, exchange, runtime.fetcher)
    return await _unless_disconnected(request, work)


def begin_exchange(runtime: Runtime, request: Request, api: str) -> tuple[Exchange, Any]:
    """A request's exchange, its client named, its logs bound and its trace span begun."""
    exchange = Exchange(api=api)
    exchange.client_address = client_address_of(request)
    bind_logs(exchange)
    span = runtime.tracing.begin_request(request.headers, api, request.method)
    exchange.trace_id = runtime.tracing.trace_id(span)
    return exchange, span


def proxy_key(request: Request) -> str | None:
    """`Authorization: Bearer KEY`, or Anthropic's `x-api-key: KEY`."""
    authorization = request.headers.get("authorization")
    api_key = request.headers.get("x-api-key")
    if authorization is None and api_key is not None:
        return f"Bearer {api_key}"
    return authorization


def client_address_of(request: Request) -> str | None:
    """The client `ForwardedHeaders` left in the scope: the peer, or behind a trusted proxy
    the client it forwarded (chosen once, at the app's edge)."""
    return request.client.host if request.client is not None else None


async def _unless_disconnected(request: Request, work: Coroutine[None, None, Response]) -> Response:
    """Run `work`, cancelling it (guard calls and upstream request included) if the client
    leaves first. Once a streaming response exists, Starlette watches for that itself."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # the client left, or this handler itself was cancelled
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientDisconnected("The client closed the connection before the answer began.")
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_body(request: Request, limit: int) -> bytes:
    """Starlette sets no body limit, so count what `receive()` delivers."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ClientDisconnected("The client closed the connection while sending.") from exc
    return b"".join(chunks)


async def audit_exchange(runtime: Runtime, exchange: Exchange, span: Any = None) -> None:
    record = exchange.audit_record()
    runtime.audit.write(record)
    runtime.metrics.record(record, exchange.upstream)
    runtime.tracing.end_request(span, exchange)
    _shadow(runtime, exchange, record["action"])


def _shadow(runtime: Runtime, exchange: Exchange, live: str) -> None:
    """The tenant's shadow policy on what was judged, after the response."""
    judged, route = exchange.judged, runtime.routes.get(exchange.tenant or "")
    if judged is None or route is None or route.shadow is None or runtime.shadows is None:
        return
    if judged.answers is None and exchange.moderation is not None and exchange.moderation.answer:
        judged.answers = [exchange.moderation.answer]
    runtime.shadows.submit(route.shadow, exchange.request_id, judged, live)


async def list_models(request: Request) -> Response:
    runtime = app_state(request.app).runtime
    exchange = Exchange()
    try:
        tenant = runtime.policies.authenticate(proxy_key(request))
        reply = await runtime.route_for(tenant).upstream.list_models()
    except GuardproxyError as exc:
        return error_response(exc, exchange, CHAT)
    return Response(reply.body, reply.status, media_type=reply.content_type)
