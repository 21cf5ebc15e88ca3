"""The reviewer page as a process of its own (`guardproxy admin serve`): the pages and their
JSON API over the shared audit database, and no data plane. No guard or upstream is built,
no `/v1` route exists (a request there is told where the proxy is), and the playground, which
runs checks through the proxy's guards, stays on the proxy's own page.

A reviewer's page load then costs the proxies nothing but the database reads it makes, which
the hourly rollups keep small (audit/rollups.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from guardproxy.admin.reviewers import Directory
from guardproxy.admin.site import AdminSite
from guardproxy.audit.store import DatabaseSink
from guardproxy.config import Settings
from guardproxy.errors import ConfigError
from guardproxy.media.fetch import ImageFetcher
from guardproxy.observe.metrics import Metrics
from guardproxy.policy.model import PolicySet
from guardproxy.server.forwarded import forwarded_headers
from guardproxy.server.probes import healthz, http_error, internal_error
from guardproxy.server.runtime import AppState, Runtime, app_state

logger = logging.getLogger(__name__)

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
PROXY_ONLY = ("/admin/playground",)  # runs the tenant's guard: only the proxy has one
NO_DATA_PLANE = (
    "This is the reviewer page's process; it relays no model traffic. Send API requests to "
    "the proxy."
)
NO_PLAYGROUND = (
    "The playground runs checks through the proxy's guards; open it on the proxy's own "
    "reviewer page."
)


def create_admin_app(settings: Settings, policies: PolicySet) -> Starlette:
    """The reviewer page alone; a `ConfigError` (one line) when it has no database or key."""
    database = settings.audit.database
    if database is None:
        raise ConfigError("admin serve needs audit.database: the page reads the proxies' trail")
    if not settings.admin.enabled:
        raise ConfigError(
            "admin serve needs admin.users, admin.keys or admin.oidc: nobody could sign in"
        )
    site = AdminSite(lambda: app_state(app), Directory.of(settings.admin, policies), settings.admin)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Migrating is a no-op where a proxy has brought the schema to head already.
        store = await DatabaseSink.open(database)
        try:
            async with _page_state(settings, policies, store) as state:
                app.state.guardproxy = state
                yield
        finally:
            await store.aclose()

    app = Starlette(
        routes=_routes(site),
        middleware=[forwarded_headers(settings)],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
        lifespan=lifespan,
    )
    return app


@asynccontextmanager
async def _page_state(
    settings: Settings, policies: PolicySet, store: DatabaseSink
) -> AsyncIterator[AppState]:
    """What the pages read: `runtime.settings`, `runtime.policies` and the audit store. A
    `Runtime` also holds the data plane's clients; here no guard, upstream or route is built,
    and the clients it must hold are opened for nothing and closed with the app."""
    async with httpx.AsyncClient() as unused, ImageFetcher() as no_images:
        metrics = Metrics()
        runtime = Runtime(settings, policies, {}, {}, {}, store, unused, no_images, metrics)
        yield AppState(runtime, metrics, store, {})


def _routes(site: AdminSite) -> list[BaseRoute]:
    pages = [r for r in site.routes() if getattr(r, "path", None) not in PROXY_ONLY]
    return [
        *pages,
        Route("/admin/playground", _proxy_only, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", _readyz, methods=["GET"]),
        Route("/v1/{path:path}", _no_data_plane, methods=ALL_METHODS),
    ]


async def _readyz(request: Request) -> Response:
    """Ready while the audit database answers."""
    store = app_state(request.app).audit_store
    assert store is not None
    try:
        async with store.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("the audit database does not answer: %s", exc)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
    return JSONResponse({"status": "ready", "database": "ok"})


async def _no_data_plane(request: Request) -> Response:
    body = {"error": {"message": NO_DATA_PLANE, "type": "invalid_request_error", "code": None}}
    return JSONResponse(body, 404)


async def _proxy_only(request: Request) -> Response:
    return JSONResponse({"error": {"message": NO_PLAYGROUND, "type": "not_found"}}, 404)
