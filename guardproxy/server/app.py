"""The ASGI application: routes, and the long-lived state built in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as HttpRoute
from starlette.types import Receive

from guardproxy.admin.auth import AdminKeys
from guardproxy.admin.server import side_server
from guardproxy.admin.site import AdminSite
from guardproxy.api.chat.codec import CHAT
from guardproxy.api.openai_errors import error_body
from guardproxy.api.wire import WIRE_APIS
from guardproxy.audit.sinks import AuditSink, FanoutSink, JsonlAuditSink
from guardproxy.audit.store import DatabaseSink
from guardproxy.config import Settings
from guardproxy.engine.vllm import build_engines, resolve_engine_urls, running
from guardproxy.errors import ClientDisconnected, GuardproxyError, PayloadTooLarge
from guardproxy.guards.cache import VerdictCache, build_cache
from guardproxy.guards.client import HttpGuard, build_guard
from guardproxy.health import SharedProbe, probe_all
from guardproxy.lifecycle.shadow import ShadowRunner
from guardproxy.media.fetch import ImageFetcher
from guardproxy.observe.logs import bind as bind_logs
from guardproxy.observe.metrics import GuardObserver, Metrics, breaker_gauges, cache_gauges
from guardproxy.observe.tracing import Tracing
from guardproxy.pipeline.checks import Guard
from guardproxy.pipeline.codec import Codec
from guardproxy.pipeline.exchange import Exchange
from guardproxy.pipeline.flow import Incoming, handle_chat
from guardproxy.pipeline.replies import error_response
from guardproxy.pipeline.streams import GuardedStream
from guardproxy.policy.model import PolicySet, key_digest
from guardproxy.server.httpclient import http_client
from guardproxy.server.reload import PolicyLoader, watch_policies
from guardproxy.server.runtime import Runtime, build_routes, build_tracing
from guardproxy.upstreams.registry import build_upstream

logger = logging.getLogger(__name__)

REGION_HEADER = "x-guardproxy-region"
# Guards and upstreams get separate pools so long LLM streams never starve guard calls.
GUARD_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128)
UPSTREAM_LIMITS = httpx.Limits(max_connections=2048, max_keepalive_connections=256)


def create_app(
    settings: Settings,
    policies: PolicySet,
    *,
    audit: AuditSink | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    reload: PolicyLoader | None = None,
    fetcher: ImageFetcher | None = None,
    metrics_dir: str | None = None,
    tracer_provider: Any = None,
) -> Starlette:
    """Build the proxy. `transport` replaces the network in tests; `audit` the JSONL file;
    `reload` (a policy loader) turns on hot reload: file changes in the policies folder and
    SIGHUP; `fetcher` replaces the image fetcher (tests point it at local servers);
    `metrics_dir` is prometheus-client's multiprocess folder (`serve --workers N`);
    `tracer_provider` an OpenTelemetry provider that replaces the OTLP exporter's. Guards
    with `engine: vllm` are started with the app and stopped with it."""
    settings = resolve_engine_urls(settings)
    admin = _admin_site(settings, policies, lambda: app.state)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engines = build_engines(settings.guards)
        kind = settings.http_transport
        async with (
            running(app.state.engines),
            http_client(kind, GUARD_LIMITS, transport) as guard_client,
            http_client(kind, UPSTREAM_LIMITS, transport) as upstream_client,
            fetcher or ImageFetcher() as image_fetcher,
        ):
            metrics = Metrics(metrics_dir)
            app.state.metrics = metrics
            app.state.audit_store = await _audit_store(settings, metrics)
            trail = audit or JsonlAuditSink(settings.audit_path(), dropped=metrics.trail_lost)
            sink = _sinks(trail, app.state.audit_store)
            clients = (guard_client, upstream_client, image_fetcher)
            cache = build_cache(settings.cache)
            tracing = build_tracing(settings.tracing, tracer_provider)
            observed = (metrics, tracing)
            shadows = ShadowRunner(
                sink.write, metrics.shadow_check, settings.shadow_checks.max_in_flight
            )
            app.state.runtime = replace(
                _runtime(settings, policies, sink, cache, observed, *clients), shadows=shadows
            )
            metrics.watch(lambda: _live_state(app, cache))
            side = settings.metrics
            stop_metrics = metrics.serve(side.host, side.port) if side.port else None
            async with (
                side_server(admin, settings.admin),
                watch_policies(app, settings.policies_dir(), reload),
            ):
                try:
                    yield
                finally:
                    await shadows.aclose()
                    await sink.aclose()
                    tracing.shutdown()
                    if cache is not None:
                        await cache.aclose()
                    if stop_metrics is not None:
                        stop_metrics()

    on_main_port = admin.routes() if admin is not None and not settings.admin.port else []
    app = Starlette(
        routes=[
            *on_main_port,
            *(HttpRoute(api.path, served(api.codec), methods=["POST"]) for api in WIRE_APIS),
            HttpRoute("/v1/models", list_models, methods=["GET"]),
            HttpRoute("/healthz", healthz, methods=["GET"]),
            HttpRoute("/metrics", metrics_endpoint, methods=["GET"]),
            HttpRoute("/readyz", readyz, methods=["GET"]),
            # Every other API surface is refused, never relayed unchecked.
            HttpRoute("/v1/{path:path}", unknown_api, methods=UNKNOWN_API_METHODS),
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    return app


def _admin_site(
    settings: Settings, policies: PolicySet, state: Callable[[], State]
) -> AdminSite | None:
    if not settings.admin.keys:
        return None
    keys = AdminKeys.of(settings.admin.keys, settings.admin.session_hours, policies)
    return AdminSite(state, keys)


def _runtime(
    settings: Settings,
    policies: PolicySet,
    audit: AuditSink,
    cache: VerdictCache | None,
    observed: tuple[Metrics, Tracing],
    guard_client: httpx.AsyncClient,
    upstream_client: httpx.AsyncClient,
    fetcher: ImageFetcher,
) -> Runtime:
    metrics, tracing = observed
    guards: dict[str, Guard] = {
        name: build_guard(guard_client, guard, cache, GuardObserver(metrics, name), tracing, name)
        for name, guard in settings.guards.items()
    }
    upstreams = {
        name: build_upstream(upstream_client, upstream)
        for name, upstream in settings.upstreams.items()
    }
    routes = build_routes(policies, guards, upstreams, tracing)
    return Runtime(
        settings, policies, guards, upstreams, routes, audit, guard_client, fetcher, metrics,
        tracing,
    )  # fmt: skip


async def _audit_store(settings: Settings, metrics: Metrics) -> DatabaseSink | None:
    audit = settings.audit
    if audit.database is None:
        return None
    return await DatabaseSink.open(
        audit.database,
        max_queue=audit.max_queue,
        retention_days=audit.retention_days,
        dropped=metrics.audit_lost,
    )


def _sinks(trail: AuditSink, store: DatabaseSink | None) -> AuditSink:
    return trail if store is None else FanoutSink(trail, store)


def _live_state(app: Starlette, cache: VerdictCache | None) -> Iterator[Metric]:
    """Breakers and the cache, read at scrape time."""
    runtime: Runtime = app.state.runtime
    pools = {n: g.pool for n, g in runtime.guards.items() if isinstance(g, HttpGuard)}
    yield from breaker_gauges(pools)
    yield from cache_gauges(cache)


def served(codec: Codec) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of one wire API: its codec decodes, the one pipeline serves."""

    async def endpoint(request: Request) -> Response:
        return await _serve(codec, request)

    return endpoint


async def _serve(codec: Codec, request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    exchange = Exchange(api=codec.api)
    bind_logs(exchange)
    span = runtime.tracing.begin_request(request.headers, codec.api)
    try:
        response = await _handle(codec, runtime, request, exchange)
    except GuardproxyError as exc:
        response = error_response(exc, exchange, codec)
    except BaseException as exc:  # the 500 handler answers; the audit still gets its line
        exchange.conclude(500, error=f"internal error: {type(exc).__name__}")
        await _audit(runtime, exchange, span)
        raise
    if isinstance(response, GuardedStream):
        response.closers.append(lambda: _audit(runtime, exchange, span))
    else:
        await _audit(runtime, exchange, span)
    return response


async def _handle(codec: Codec, runtime: Runtime, request: Request, exchange: Exchange) -> Response:
    tenant = runtime.policies.authenticate(_proxy_key(request))
    exchange.tenant = tenant.tenant
    chat = codec.decode(await _read_body(request, runtime.settings.max_body_bytes))
    exchange.model, exchange.stream = chat.model, chat.stream
    route = runtime.route_for(tenant)
    forwarded = runtime.settings.upstreams[tenant.upstream].forward_headers
    headers = {name: request.headers[name] for name in forwarded if name in request.headers}
    incoming = Incoming(codec, chat, headers, request.headers.get(REGION_HEADER))
    work = handle_chat(route, incoming, exchange, runtime.fetcher)
    return await _unless_disconnected(request, work)


def _proxy_key(request: Request) -> str | None:
    """`Authorization: Bearer KEY`, or Anthropic's `x-api-key: KEY`."""
    authorization = request.headers.get("authorization")
    api_key = request.headers.get("x-api-key")
    if authorization is None and api_key is not None:
        return f"Bearer {api_key}"
    return authorization


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


async def _read_body(request: Request, limit: int) -> bytes:
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


async def _audit(runtime: Runtime, exchange: Exchange, span: Any = None) -> None:
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
    runtime: Runtime = request.app.state.runtime
    exchange = Exchange()
    try:
        tenant = runtime.policies.authenticate(_proxy_key(request))
        reply = await runtime.route_for(tenant).upstream.list_models()
    except GuardproxyError as exc:
        return error_response(exc, exchange, CHAT)
    return Response(reply.body, reply.status, media_type=reply.content_type)


UNKNOWN_API_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def unknown_api(request: Request) -> Response:
    """OpenAI's answer to a URL it does not serve; guardproxy judges only what it handles."""
    message = f"Invalid URL ({request.method} {request.url.path})"
    return JSONResponse(error_body(message, "invalid_request_error", None, None), 404)


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition; not behind a tenant key, and no label holds text or keys."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready or not, for anyone; what is down (tenants, guard URLs, reload errors with their
    file paths) only for an admin key."""
    runtime: Runtime = request.app.state.runtime
    body = await _readiness(request.app.state, runtime)
    status = 200 if body["status"] == "ready" else 503
    if not _admin_reads(request, runtime):
        return JSONResponse({"status": body["status"]}, status)
    engines = request.app.state.engines
    if engines:
        body["engines"] = {name: engine.status.view() for name, engine in engines.items()}
    return JSONResponse(body, status)


async def _readiness(state: State, runtime: Runtime) -> dict[str, Any]:
    if not hasattr(state, "probes"):  # one per app, shared by every probe request
        state.probes = SharedProbe[tuple[dict[str, str], dict[str, str]]]()
    guards, upstreams = await state.probes.get(
        lambda: probe_all(runtime.probe_client, dict(runtime.settings.guards), runtime.upstreams)
    )
    guards = dict(guards)  # the cached result stays as probed
    pools = {
        name: guard.pool for name, guard in runtime.guards.items() if isinstance(guard, HttpGuard)
    }
    for name, pool in pools.items():
        if pool.all_ejected:  # every replica's breaker is open: calls fail fast now
            guards[name] = "circuit open"
    for name, engine in state.engines.items():  # the supervisor's word is fresher than a probe
        if engine.status.state != "ready":
            guards[name] = f"engine {engine.status.state}"
    ready = all(state == "ok" for state in (*guards.values(), *upstreams.values()))
    policies: dict[str, object] = {"status": "loaded", "tenants": sorted(runtime.policies.tenants)}
    if runtime.reload_error:
        # The last good set keeps serving; the broken one is named so someone fixes it.
        policies.update(status="reload_failed", error=runtime.reload_error)
    return {
        "status": "ready" if ready else "not_ready",
        "policies": policies,
        "guards": guards,
        "guard_pools": {name: pool.view() for name, pool in pools.items()},
        "upstreams": upstreams,
    }


def _admin_reads(request: Request, runtime: Runtime) -> bool:
    """An admin key as a Bearer token (the reviewer page's cookie is scoped to /admin)."""
    admin = runtime.settings.admin
    keys = AdminKeys(tuple(key_digest(key) for key in admin.keys), admin.session_hours * 3600)
    return keys.enabled and keys.bearer(request)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = error_body(exc.detail, "invalid_request_error", None, None)
    return JSONResponse(body, exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
    body = error_body("The proxy failed to process the request.", "server_error", None, None)
    return JSONResponse(body, 500)
