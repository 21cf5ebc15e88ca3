"""What serves requests, typed: the `Runtime` (settings, policies and each tenant's wiring),
replaced whole on a policy reload, and the `AppState` every part of the server reads. The
admin pages and hot reload import these types; this module imports neither."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from starlette.applications import Starlette

from guardproxy.api.mcp.gateway import McpGateway
from guardproxy.audit.sinks import AuditSink
from guardproxy.audit.store import DatabaseSink
from guardproxy.config import Settings, TracingSettings
from guardproxy.engine.vllm import VllmEngine
from guardproxy.errors import ConfigError
from guardproxy.guards.client import HttpGuard
from guardproxy.health import SharedProbe
from guardproxy.lifecycle.shadow import ShadowRunner
from guardproxy.media.fetch import ImageFetcher
from guardproxy.observe.metrics import Metrics
from guardproxy.observe.tracing import NO_TRACING, Tracing
from guardproxy.pipeline.chain import chain_for, guard_chain, runner
from guardproxy.pipeline.checks import Guard
from guardproxy.pipeline.flow import Route
from guardproxy.pipeline.masking import Masker
from guardproxy.pipeline.shadow import ShadowRoute
from guardproxy.policy.model import PolicySet, TenantPolicy
from guardproxy.policy.profile import build_profiles
from guardproxy.upstreams.base import Upstream


@dataclass(frozen=True)
class Runtime:
    """What serves requests. Built once per policy set and replaced whole on a reload; a
    request keeps the runtime it started with."""

    settings: Settings
    policies: PolicySet
    guards: dict[str, Guard]
    upstreams: dict[str, Upstream]
    routes: dict[str, Route]
    audit: AuditSink
    probe_client: httpx.AsyncClient
    fetcher: ImageFetcher
    metrics: Metrics
    tracing: Tracing = NO_TRACING
    shadows: ShadowRunner | None = None
    reload_error: str | None = None
    mcp: McpGateway | None = None  # the MCP servers of `mcp_servers`, where there are any

    def route_for(self, tenant: TenantPolicy) -> Route:
        return self.routes[tenant.tenant]

    def with_policies(self, policies: PolicySet) -> Runtime:
        routes = build_routes(policies, self.guards, self.upstreams, self.tracing)
        return replace(self, policies=policies, routes=routes, reload_error=None)

    def with_error(self, error: str) -> Runtime:
        return replace(self, reload_error=error)


@dataclass
class AppState:
    """What the lifespan builds and every part of the server reads, typed: the live runtime
    (a policy reload swaps it whole), the metrics, the audit database and the embedded
    engines. It is the app's only state (`app_state(app)`)."""

    runtime: Runtime
    metrics: Metrics
    audit_store: DatabaseSink | None
    engines: dict[str, VllmEngine]
    # /readyz's probe of every guard and upstream, shared by the probe requests of a second
    probes: SharedProbe[tuple[dict[str, str], dict[str, str]]] = field(default_factory=SharedProbe)


def app_state(app: Starlette) -> AppState:
    state = app.state.guardproxy
    assert isinstance(state, AppState), "the lifespan has not started"
    return state


def build_routes(
    policies: PolicySet,
    guards: dict[str, Guard],
    upstreams: dict[str, Upstream],
    tracing: Tracing,
) -> dict[str, Route]:
    return {
        name: Route(
            tenant,
            guard_chain(tenant, guards),
            upstreams[tenant.upstream],
            build_profiles(tenant, policies.regions),
            Masker.for_policy(tenant.redaction),  # in every mode: monitor relaxes decisions only
            tracing,
            shadow_route(policies, name, guards),
        )
        for name, tenant in policies.tenants.items()
    }


def shadow_route(policies: PolicySet, name: str, guards: dict[str, Guard]) -> ShadowRoute | None:
    shadow = policies.shadows.get(name)
    if shadow is None:
        return None
    chain = chain_for(shadow, lambda guard: runner(_shadow_guard(guards[guard])))
    return ShadowRoute.of(policies.tenants[name], shadow, chain, policies.regions)


def _shadow_guard(guard: Guard) -> Guard:
    """A guard's calls for a shadow, counted and traced apart from the live checks."""
    return guard.for_shadow() if isinstance(guard, HttpGuard) else guard


def build_tracing(settings: TracingSettings, provider: Any = None) -> Tracing:
    """OpenTelemetry tracing when the config turns it on; `provider` (tests) replaces the
    OTLP exporter's."""
    if not settings.active and provider is None:
        return NO_TRACING
    try:
        from guardproxy.server.otel import OtelTracing
    except ImportError as exc:
        raise ConfigError(
            "tracing needs OpenTelemetry: pip install 'guardproxy[otel]'", "tracing"
        ) from exc
    return OtelTracing.of(settings, provider)
