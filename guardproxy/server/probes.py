"""The side endpoints: liveness, readiness (details only for an admin key),
metrics, the refusal of every other `/v1/` path, and the error handlers."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from guardproxy.admin.auth import bearer
from guardproxy.admin.reviewers import Directory
from guardproxy.api.openai_errors import error_body
from guardproxy.guards.client import HttpGuard
from guardproxy.health import probe_all
from guardproxy.server.runtime import AppState, Runtime, app_state

logger = logging.getLogger(__name__)


UNKNOWN_API_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def unknown_api(request: Request) -> Response:
    """OpenAI's answer to a URL it does not serve; guardproxy judges only what it handles."""
    message = f"Invalid URL ({request.method} {request.url.path})"
    return JSONResponse(error_body(message, "invalid_request_error", None, None), 404)


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus exposition; not behind a tenant key, and no label holds text or keys."""
    metrics = app_state(request.app).metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Whether this pod can serve: its policies are loaded and its own embedded engines are
    up. A guard or upstream outage does not take the pod out of the Service (clients then get
    the documented 503 `guard_unavailable`, and fail-open and monitored tenants keep their
    service): it is reported as `dependencies: degraded`, with what is down (tenants, guard
    URLs, reload errors with their file paths), only for an admin key."""
    state = app_state(request.app)
    runtime = state.runtime
    body = await _readiness(state, runtime)
    status = 200 if body["status"] == "ready" else 503
    if not _admin_reads(request, runtime):
        return JSONResponse({"status": body["status"]}, status)
    engines = state.engines
    if engines:
        body["engines"] = {name: engine.status.view() for name, engine in engines.items()}
    return JSONResponse(body, status)


async def _readiness(state: AppState, runtime: Runtime) -> dict[str, Any]:
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
    for kind, found in (("guard", guards), ("upstream", upstreams)):
        for name, said in found.items():  # graphed and alerted on, never a reason to eject
            state.metrics.dependency(kind, name, said == "ok")
    own = all(engine.status.state == "ready" for engine in state.engines.values())
    healthy = all(state == "ok" for state in (*guards.values(), *upstreams.values()))
    policies: dict[str, object] = {"status": "loaded", "tenants": sorted(runtime.policies.tenants)}
    if runtime.reload_error:
        # The last good set keeps serving; the broken one is named so someone fixes it.
        policies.update(status="reload_failed", error=runtime.reload_error)
    return {
        "status": "ready" if own else "not_ready",
        "dependencies": "ok" if healthy else "degraded",
        "policies": policies,
        "guards": guards,
        "guard_pools": {name: pool.view() for name, pool in pools.items()},
        "upstreams": upstreams,
    }


def _admin_reads(request: Request, runtime: Runtime) -> bool:
    """An admin's key as a Bearer token (the reviewer page's cookie is scoped to /admin)."""
    reviewer = bearer(request, Directory.named(runtime.settings.admin))
    return reviewer is not None and reviewer.may("admin")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    body = error_body(exc.detail, "invalid_request_error", None, None)
    return JSONResponse(body, exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error on %s", request.url.path, exc_info=exc)
    body = error_body("The proxy failed to process the request.", "server_error", None, None)
    return JSONResponse(body, 500)
