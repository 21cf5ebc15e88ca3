"""The ASGI application: routes from `WIRE_APIS`, the lifespan that builds the typed `AppState`."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route as HttpRoute

from guardproxy.admin.reviewers import Directory
from guardproxy.admin.server import side_server
from guardproxy.admin.site import AdminSite
from guardproxy.api.mcp.gateway import McpGateway
from guardproxy.api.wire import MCP_ROUTE, WIRE_APIS
from guardproxy.audit.sinks import AuditSink, FanoutSink, JsonlAuditSink, Rotation
from guardproxy.audit.store import DatabaseSink
from guardproxy.config import Settings
from guardproxy.engine.vllm import build_engines, resolve_engine_urls, running
from guardproxy.guards.cache import VerdictCache, build_cache
from guardproxy.guards.client import HttpGuard, build_guard
from guardproxy.lifecycle.shadow import ShadowRunner
from guardproxy.media.fetch import ImageFetcher
from guardproxy.observe.live import watching
from guardproxy.observe.metrics import GuardObserver, Metrics
from guardproxy.observe.tracing import Tracing
from guardproxy.pipeline.checks import Guard
from guardproxy.policy.model import PolicySet
from guardproxy.server.endpoints import list_models, served
from guardproxy.server.forwarded import forwarded_headers
from guardproxy.server.httpclient import http_client
from guardproxy.server.mcp_endpoint import mcp_endpoint
from guardproxy.server.probes import (
    UNKNOWN_API_METHODS,
    healthz,
    http_error,
    internal_error,
    metrics_endpoint,
    readyz,
    unknown_api,
)
from guardproxy.server.reload import PolicyLoader, watch_policies
from guardproxy.server.runtime import (
    AppState,
    Runtime,
    app_state,
    build_routes,
    build_tracing,
)
from guardproxy.upstreams.mcp import McpUpstream
from guardproxy.upstreams.registry import build_upstream

logger = logging.getLogger(__name__)

# Guards and upstreams get separate pools so long LLM streams never starve guard calls.
GUARD_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128)
UPSTREAM_LIMITS = httpx.Limits(max_connections=2048, max_keepalive_connections=256)
# MCP servers have a pool of their own: clients' long-lived GET streams must never take the
# connections the upstream LLMs need.
MCP_LIMITS = httpx.Limits(max_connections=1024, max_keepalive_connections=128)


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
    freeze_startup: bool = False,
) -> Starlette:
    """Build the proxy. `transport` replaces the network in tests; `audit` the JSONL file;
    `reload` (a policy loader) turns on hot reload: file changes in the policies folder and
    SIGHUP; `fetcher` replaces the image fetcher (tests point it at local servers);
    `metrics_dir` is prometheus-client's multiprocess folder (`serve --workers N`);
    `tracer_provider` an OpenTelemetry provider that replaces the OTLP exporter's;
    `freeze_startup` (`guardproxy serve`) moves what startup built out of the collector's
    reach. Guards with `engine: vllm` are started with the app and stopped with it."""
    settings = resolve_engine_urls(settings)
    admin = _admin_site(settings, policies, lambda: app_state(app))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engines = build_engines(settings.guards)
        kind = settings.http_transport
        async with (
            running(engines),
            http_client(kind, GUARD_LIMITS, transport) as guard_client,
            http_client(kind, UPSTREAM_LIMITS, transport) as upstream_client,
            http_client(kind, MCP_LIMITS, transport) as mcp_client,
            fetcher or ImageFetcher() as image_fetcher,
        ):
            metrics = Metrics(metrics_dir)
            store = await _audit_store(settings, metrics)
            trail = audit or JsonlAuditSink(
                settings.audit_path(),
                dropped=metrics.trail_lost,
                rotation=_rotation(settings),
                observer=metrics.sink("jsonl"),
            )
            sink = _sinks(trail, store)
            clients = (guard_client, upstream_client, mcp_client, image_fetcher)
            cache = build_cache(settings.cache)
            tracing = build_tracing(settings.tracing, tracer_provider)
            observed = (metrics, tracing)
            shadows = ShadowRunner(
                sink.write, metrics.shadow_check, settings.shadow_checks.max_in_flight
            )
            runtime = replace(
                _runtime(settings, policies, sink, cache, observed, *clients), shadows=shadows
            )
            app.state.guardproxy = AppState(runtime, metrics, store, engines)
            sinks = ("jsonl",) if store is None else ("jsonl", "database")
            metrics.prime(policies.tenants, settings.guards, sinks)
            side = settings.metrics
            stop_metrics = metrics.serve(side.host, side.port) if side.port else None
            async with (
                watching(metrics, lambda: _pools(app), cache),
                side_server(admin, settings.admin, [forwarded_headers(settings)]),
                watch_policies(app, settings.policies_dir(), reload),
            ):
                if freeze_startup:
                    # Imports, settings and policies live as long as the process: a full
                    # collection walking them stalled the loop up to 161 ms at c=32
                    # (bench/README.md, "Tail latency"); frozen, the same two took 4 ms.
                    gc.collect()
                    gc.freeze()
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
            HttpRoute(MCP_ROUTE, mcp_endpoint, methods=["GET", "POST", "DELETE"]),
            HttpRoute("/healthz", healthz, methods=["GET"]),
            HttpRoute("/metrics", metrics_endpoint, methods=["GET"]),
            HttpRoute("/readyz", readyz, methods=["GET"]),
            # Every other API surface is refused, never relayed unchecked.
            HttpRoute("/v1/{path:path}", unknown_api, methods=UNKNOWN_API_METHODS),
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        # Whoever serves the app, the client and scheme are chosen once, here: behind a
        # trusted proxy those it forwarded, else the peer's (server/forwarded.py).
        middleware=[forwarded_headers(settings)],
        lifespan=lifespan,
    )
    return app


def _admin_site(
    settings: Settings, policies: PolicySet, state: Callable[[], AppState]
) -> AdminSite | None:
    if not settings.admin.enabled:
        return None
    return AdminSite(state, Directory.of(settings.admin, policies), settings.admin)


def _runtime(
    settings: Settings,
    policies: PolicySet,
    audit: AuditSink,
    cache: VerdictCache | None,
    observed: tuple[Metrics, Tracing],
    guard_client: httpx.AsyncClient,
    upstream_client: httpx.AsyncClient,
    mcp_client: httpx.AsyncClient,
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
    servers = {
        name: McpUpstream(name, server, mcp_client) for name, server in settings.mcp_servers.items()
    }
    return Runtime(
        settings, policies, guards, upstreams, routes, audit, guard_client, fetcher, metrics,
        tracing, mcp=McpGateway(servers) if servers else None,
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
        observer=metrics.sink("database"),
    )


def _rotation(settings: Settings) -> Rotation | None:
    audit = settings.audit
    if audit.rotate_bytes is None and not audit.rotate_daily:
        return None
    return Rotation(audit.rotate_bytes, audit.rotate_daily, audit.keep_files)


def _sinks(trail: AuditSink, store: DatabaseSink | None) -> AuditSink:
    return trail if store is None else FanoutSink(trail, store)


def _pools(app: Starlette) -> dict[str, Any]:
    """Each HTTP guard's replica pool, as the app runs now."""
    guards = app_state(app).runtime.guards
    return {name: guard.pool for name, guard in guards.items() if isinstance(guard, HttpGuard)}
