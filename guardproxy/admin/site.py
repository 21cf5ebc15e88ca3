"""The reviewer page: decisions (filtered, paged, charted), one decision with its reasoning
trace, each tenant's policy as the guard receives it, and a playground that runs a check.

Server-rendered with Jinja2 (templates/), a few lines of plain JS, no build step. Every page
and `/admin/api/*` route names the least role it needs (reviewers.py); the admission wrapper
finds the reviewer (a key, or a session opened by a key or an OpenID Connect sign-in: auth.py,
oidc.py), refuses who lacks the role, and sets `request.state.reviewer` and
`request.state.access_log` for the route (audit/access.py records through them).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from guardproxy.admin.access_pages import AccessPages
from guardproxy.admin.auth import COOKIE, AdminAccess, LoginThrottle, provider_sha256
from guardproxy.admin.decisions import DecisionPages
from guardproxy.admin.oidc import (
    PENDING_COOKIE,
    PENDING_S,
    OidcSignIn,
    Pending,
    SignInRefused,
    StartThrottle,
)
from guardproxy.admin.pages import HEADERS, Pages
from guardproxy.admin.playground import PlaygroundCase, run_playground
from guardproxy.admin.reviewers import Directory, Reviewer
from guardproxy.admin.sessions import DatabaseSessions, MemorySessions, SessionStore
from guardproxy.audit.access import AccessLog
from guardproxy.config import AdminSettings, Role
from guardproxy.core.verdict import Direction
from guardproxy.errors import AuthenticationError
from guardproxy.policy.view import show_guard_request

if TYPE_CHECKING:
    from guardproxy.server.runtime import AppState, Runtime

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_BYTES = 8 * 1024 * 1024  # the playground's image arrives as a data: URL

Endpoint = Callable[[Request], Awaitable[Response]]


class AdminSite:
    """The pages, reading the app's live, typed state: `state()` gives the `AppState` whose
    `runtime` and `audit_store` the lifespan sets (and a policy reload replaces). `clock`
    times the OpenID Connect provider's cached documents and the limit on sign-ins started."""

    def __init__(
        self,
        state: Callable[[], AppState],
        directory: Directory,
        settings: AdminSettings,
        oidc_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state, self.directory, self.settings = state, directory, settings
        self.pages = Pages(Jinja2Templates(directory=TEMPLATES))
        self.decisions = DecisionPages(lambda: self.store, self.pages)
        self.access = AdminAccess(directory, self._sessions, provider_sha256(settings.oidc))
        self.access_log = AccessLog(lambda: self.store)
        self.access_pages = AccessPages(self.access_log, self.pages)
        self.throttle = LoginThrottle()
        self.starts = StartThrottle(clock)
        self.oidc = None
        if settings.oidc is not None:
            self.oidc = OidcSignIn(settings.oidc, oidc_transport, clock)
        self._memory = MemorySessions()
        self._database: DatabaseSessions | None = None

    def _sessions(self) -> SessionStore:
        """The audit database's sessions (shared by workers and replicas), else the process's."""
        engine = self.store
        if engine is None:
            return self._memory
        if self._database is None or self._database.engine is not engine:
            self._database = DatabaseSessions(engine)
        return self._database

    def runtime(self) -> Runtime:
        return self.state().runtime

    @property
    def store(self) -> AsyncEngine | None:
        sink = self.state().audit_store
        return None if sink is None else sink.engine

    def routes(self) -> list[BaseRoute]:
        # Each route and the least role it needs.
        guarded: dict[str, tuple[Role, Endpoint]] = {
            "/admin/": ("viewer", self.decisions.listing),
            "/admin/decisions/{request_id}": ("viewer", self.decisions.one),
            "/admin/policies": ("admin", self.policies),
            "/admin/access": ("admin", self.access_pages.listing),
            "/admin/api/decisions": ("viewer", self.decisions.api_listing),
            "/admin/api/decisions/{request_id}": ("viewer", self.decisions.api_one),
            "/admin/api/access": ("admin", self.access_pages.api_listing),
            "/admin/api/decisions.csv": ("viewer", self.decisions.api_export("csv")),
            "/admin/api/decisions.ndjson": ("viewer", self.decisions.api_export("ndjson")),
        }
        posted: dict[str, tuple[Role, Endpoint]] = {
            "/admin/decisions/{request_id}/labels": ("reviewer", self.label_form),
            "/admin/api/decisions/{request_id}/labels": ("reviewer", self.decisions.api_label),
        }
        routes: list[BaseRoute] = [
            Route(path, _headed(self._admitted(endpoint, role)), methods=[method])
            for method, named in (("GET", guarded), ("POST", posted))
            for path, (role, endpoint) in named.items()
        ]
        playground = _headed(self._admitted(self.playground, "admin"))
        return [
            *routes,
            Route("/admin/playground", playground, methods=["GET", "POST"]),
            Route("/admin", _headed(self.to_index), methods=["GET"]),
            Route("/admin/login", _headed(self.login_form), methods=["GET"]),
            Route("/admin/login", _headed(self.login), methods=["POST"]),
            Route("/admin/logout", _headed(self.logout), methods=["POST"]),
            Route("/admin/oidc/start", _headed(self.oidc_start), methods=["GET"]),
            Route("/admin/oidc/callback", _headed(self.oidc_callback), methods=["GET"]),
        ]

    # -- access -----------------------------------------------------------------------------

    def _admitted(self, endpoint: Endpoint, role: Role) -> Endpoint:
        async def admitted(request: Request) -> Response:
            reviewer = await self.access.admits(request)
            if reviewer is None:
                return self._unknown(request)
            if not reviewer.may(role):
                return self._forbidden(request, role)
            request.state.reviewer, request.state.access_log = reviewer, self.access_log
            return await endpoint(request)

        return admitted

    def _unknown(self, request: Request) -> Response:
        if _wants_json(request):
            body = {"error": {"message": self._refusal(request), "type": "unauthorized"}}
            return JSONResponse(body, 401, headers={"www-authenticate": "Bearer"})
        target = urlencode({"next": request.url.path})
        return RedirectResponse(f"/admin/login?{target}", 303)

    def _forbidden(self, request: Request, role: Role) -> Response:
        message = f"This needs the {role} role."
        if _wants_json(request):
            return JSONResponse({"error": {"message": message, "type": "forbidden"}}, 403)
        return self.pages.render(request, "forbidden.html", 403, message=message)

    def _refusal(self, request: Request) -> str:
        _, _, token = request.headers.get("authorization", "").partition(" ")
        if self._is_tenant_key(token.strip()):
            return "A tenant key does not open the reviewer page; use a reviewer's key."
        return "A reviewer's key is needed (Authorization: Bearer <key>)."

    def _is_tenant_key(self, key: str) -> bool:
        try:
            self.runtime().policies.authenticate(f"Bearer {key}")
        except AuthenticationError:
            return False
        return True

    async def to_index(self, request: Request) -> Response:
        return RedirectResponse("/admin/", 307)

    async def login_form(self, request: Request) -> Response:
        return self._login_page(request, 200, _local(request.query_params.get("next")))

    def _login_page(self, request: Request, status: int, target: str, error: str = "") -> Response:
        return self.pages.render(
            request, "login.html", status, next=target, error=error,
            keys=bool(self.directory.keyed), oidc=self.oidc is not None,
        )  # fmt: skip

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        key, target = form.get("key", ""), _local(form.get("next"))
        address = self._client(request)
        if (refused := self._throttled(request, address, target)) is not None:
            return refused
        found = self.directory.by_key(key) if key else None
        if found is None:
            await self._failed(address, {"method": "key"})
            error = (
                "A tenant key does not open the reviewer page; use a reviewer's key."
                if self._is_tenant_key(key)
                else "That is not a reviewer's key."
            )
            return self._login_page(request, 401, target, error)
        return await self._signed_in(request, found.reviewer, found.digest.hex(), target, "key")

    def _throttled(self, request: Request, address: str, target: str) -> Response | None:
        wait = self.throttle.retry_after(address)
        if wait is None:
            return None
        return self._too_many(request, target, wait, "failed logins")

    def _too_many(self, request: Request, target: str, wait: int, what: str) -> Response:
        error = f"Too many {what}; try again in {wait} s."
        response = self._login_page(request, 429, target, error)
        response.headers["retry-after"] = str(wait)
        return response

    async def _failed(self, address: str, detail: dict[str, str]) -> None:
        self.throttle.failed(address)
        await self.access_log.write("-", "sign_in_failed", None, address, detail)

    async def _signed_in(
        self, request: Request, reviewer: Reviewer, key_sha256: str, target: str, method: str
    ) -> Response:
        address = self._client(request)
        self.throttle.succeeded(address)
        detail = {"method": method, "role": reviewer.role}
        await self.access_log.write(reviewer.name, "sign_in", None, address, detail)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE,
            await self.access.open(reviewer, key_sha256),
            max_age=int(self.directory.session_s),
            path="/admin",
            httponly=True,
            samesite="strict",
            secure=self._is_https(request),
        )
        return response

    async def logout(self, request: Request) -> Response:
        await self.access.close(request)  # the session ends on the server, not only here
        response = RedirectResponse("/admin/login", 303)
        response.delete_cookie(COOKIE, path="/admin", secure=self._is_https(request))
        return response

    # -- OpenID Connect ---------------------------------------------------------------------

    async def oidc_start(self, request: Request) -> Response:
        if self.oidc is None:
            return self._login_page(request, 404, "/admin/", "OpenID Connect is not configured.")
        target = _local(request.query_params.get("next"))
        address = self._client(request)
        # An address locked out for failed logins would be refused at the callback anyway.
        if (refused := self._throttled(request, address, target)) is not None:
            return refused
        if (wait := self.starts.take(address)) is not None:
            return self._too_many(request, target, wait, "sign-ins started")
        try:
            url, pending = await self.oidc.begin(self._callback_url(request), target)
        except SignInRefused as exc:
            return self._login_page(request, 502, target, str(exc))
        response = RedirectResponse(url, 303)
        # Lax, not strict: the provider sends the browser back with a cross-site navigation.
        response.set_cookie(
            PENDING_COOKIE, pending.cookie(), max_age=PENDING_S, path="/admin/oidc",
            httponly=True, samesite="lax", secure=self._is_https(request),
        )  # fmt: skip
        return response

    async def oidc_callback(self, request: Request) -> Response:
        pending = Pending.of(request.cookies.get(PENDING_COOKIE, ""))
        address = self._client(request)
        target = pending.next if pending else "/admin/"
        if self.oidc is None or pending is None:
            return self._login_page(request, 400, target, "Start the sign-in again.")
        if (refused := self._throttled(request, address, target)) is not None:
            return refused
        try:
            query = dict(request.query_params)
            reviewer = await self.oidc.finish(query, pending, self._callback_url(request))
        except SignInRefused as exc:
            await self._failed(address, {"method": "oidc", "reason": str(exc)})
            return self._login_page(request, 401, target, f"Sign-in refused: {exc}.")
        provider = self.access.provider or ""
        response = await self._signed_in(request, reviewer, provider, _local(target), "oidc")
        response.delete_cookie(PENDING_COOKIE, path="/admin/oidc")
        return response

    def _callback_url(self, request: Request) -> str:
        base = self.settings.public_url or str(request.base_url)
        return base.rstrip("/") + "/admin/oidc/callback"

    def _is_https(self, request: Request) -> bool:
        """As the browser sees the page: the configured public URL's scheme, else the
        request's (taken from `X-Forwarded-Proto` only behind `trusted_proxies`, at the
        app's edge: server/forwarded.py)."""
        public_url = self.settings.public_url
        if public_url:
            return public_url.startswith("https://")
        return request.url.scheme == "https"

    def _client(self, request: Request) -> str:
        """The address failed logins are counted against (behind a trusted proxy, the app's
        edge has already put the forwarded client's here)."""
        return request.client.host if request.client else ""

    async def label_form(self, request: Request) -> Response:
        return await self.decisions.form_label(request, await _form(request))

    # -- policies and playground ------------------------------------------------------------

    async def policies(self, request: Request) -> Response:
        runtime = self.runtime()
        tenants = sorted(runtime.policies.tenants)
        name = request.query_params.get("tenant") or (tenants[0] if tenants else "")
        region = request.query_params.get("region") or None
        tenant = runtime.policies.tenants.get(name)
        shown = {}
        if tenant is not None:
            for direction in Direction:
                shown[direction.value] = show_guard_request(
                    runtime.settings, tenant, runtime.policies, region, direction
                )
        regions = sorted(runtime.policies.regions)
        return self.pages.render(
            request, "policy.html", tenants=tenants, tenant=name, region=region or "",
            regions=regions, shown=shown,
        )  # fmt: skip

    async def playground(self, request: Request) -> Response:
        runtime = self.runtime()
        tenants = sorted(runtime.policies.tenants)
        case, result = PlaygroundCase(tenant=tenants[0] if tenants else ""), None
        if request.method == "POST":
            case = PlaygroundCase.of(await _form(request))
            result = await run_playground(runtime, case)
        return self.pages.render(
            request, "playground.html", tenants=tenants, case=case, result=result
        )


def _headed(endpoint: Endpoint) -> Endpoint:
    """`endpoint` with the admin headers on every response it gives (pages set their own
    content security policy, with the nonce of their inline style and script)."""

    async def headed(request: Request) -> Response:
        response = await endpoint(request)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return headed


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/admin/api/") or "authorization" in request.headers


def _local(target: str | None) -> str:
    """Only a path on this site is a place to go back to after login."""
    if not target or not target.startswith("/admin") or target.startswith("//"):
        return "/admin/"
    return target


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (no multipart parser needed: the image comes as a data: URL)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            break
    fields = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}
