"""The reviewer page: decisions (filtered, paged, charted), one decision with its reasoning
trace, each tenant's policy as the guard receives it, and a playground that runs a check.

Server-rendered with Jinja2 (templates/), a few lines of plain JS, no build step. Every page
and `/admin/api/*` route needs an admin key (auth.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlencode

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from guardproxy.admin.auth import COOKIE, AdminAccess, AdminKeys, LoginThrottle
from guardproxy.admin.decisions import DecisionPages
from guardproxy.admin.pages import HEADERS, Pages
from guardproxy.admin.playground import PlaygroundCase, run_playground
from guardproxy.admin.sessions import DatabaseSessions, MemorySessions, SessionStore
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
    `runtime` and `audit_store` the lifespan sets (and a policy reload replaces)."""

    def __init__(self, state: Callable[[], AppState], keys: AdminKeys) -> None:
        self.state, self.keys = state, keys
        self.pages = Pages(Jinja2Templates(directory=TEMPLATES))
        self.decisions = DecisionPages(lambda: self.store, self.pages)
        self.access = AdminAccess(keys, self._sessions)
        self.throttle = LoginThrottle()
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
        guarded = {
            "/admin/": self.decisions.listing,
            "/admin/decisions/{request_id}": self.decisions.one,
            "/admin/policies": self.policies,
            "/admin/api/decisions": self.decisions.api_listing,
            "/admin/api/decisions/{request_id}": self.decisions.api_one,
        }
        routes: list[BaseRoute] = [
            Route(path, _headed(self._admitted(endpoint)), methods=["GET"])
            for path, endpoint in guarded.items()
        ]
        playground = _headed(self._admitted(self.playground))
        return [
            *routes,
            Route("/admin/playground", playground, methods=["GET", "POST"]),
            Route("/admin", _headed(self.to_index), methods=["GET"]),
            Route("/admin/login", _headed(self.login_form), methods=["GET"]),
            Route("/admin/login", _headed(self.login), methods=["POST"]),
            Route("/admin/logout", _headed(self.logout), methods=["POST"]),
        ]

    # -- access -----------------------------------------------------------------------------

    def _admitted(self, endpoint: Endpoint) -> Endpoint:
        async def admitted(request: Request) -> Response:
            if await self.access.admits(request):
                return await endpoint(request)
            if request.url.path.startswith("/admin/api/") or "authorization" in request.headers:
                body = {"error": {"message": self._refusal(request), "type": "unauthorized"}}
                return JSONResponse(body, 401, headers={"www-authenticate": "Bearer"})
            target = urlencode({"next": request.url.path})
            return RedirectResponse(f"/admin/login?{target}", 303)

        return admitted

    def _refusal(self, request: Request) -> str:
        _, _, token = request.headers.get("authorization", "").partition(" ")
        if self._is_tenant_key(token.strip()):
            return "A tenant key does not open the reviewer page; use an admin key."
        return "An admin key is needed (Authorization: Bearer <admin key>)."

    def _is_tenant_key(self, key: str) -> bool:
        try:
            self.runtime().policies.authenticate(f"Bearer {key}")
        except AuthenticationError:
            return False
        return True

    async def to_index(self, request: Request) -> Response:
        return RedirectResponse("/admin/", 307)

    async def login_form(self, request: Request) -> Response:
        return self.pages.render(
            request, "login.html", next=_local(request.query_params.get("next"))
        )

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        key, target = form.get("key", ""), _local(form.get("next"))
        address = self._client(request)
        wait = self.throttle.retry_after(address)
        if wait is not None:
            error = f"Too many failed logins; try again in {wait} s."
            response = self.pages.render(request, "login.html", 429, next=target, error=error)
            response.headers["retry-after"] = str(wait)
            return response
        digest = self.keys.accepts(key) if key else None
        if digest is None:
            self.throttle.failed(address)
            error = (
                "A tenant key does not open the reviewer page; use an admin key."
                if self._is_tenant_key(key)
                else "That is not an admin key."
            )
            return self.pages.render(request, "login.html", 401, next=target, error=error)
        self.throttle.succeeded(address)
        response = RedirectResponse(target, 303)
        response.set_cookie(
            COOKIE,
            await self.access.open(digest),
            max_age=int(self.keys.session_s),
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

    def _is_https(self, request: Request) -> bool:
        """As the browser sees the page: the configured public URL's scheme, else the
        request's (which uvicorn takes from `X-Forwarded-Proto` for the proxies it trusts:
        `FORWARDED_ALLOW_IPS`, 127.0.0.1 by default)."""
        public_url = self.runtime().settings.admin.public_url
        if public_url:
            return public_url.startswith("https://")
        return request.url.scheme == "https"

    def _client(self, request: Request) -> str:
        """The address failed logins are counted against (behind a trusted proxy, uvicorn
        has already put the forwarded client's here)."""
        return request.client.host if request.client else ""

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
