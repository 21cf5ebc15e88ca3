"""Sign-in to the reviewer page through an OpenID Connect provider (`admin.oidc`).

The authorization code flow with PKCE (RFC 7636, S256), `state` and `nonce` (OpenID Connect
Core 1.0 §3.1), through Authlib's OAuth 2.0 parts; the ID token is verified with joserfc (both the
`oidc` extra, imported only when a sign-in runs):
its signature against the provider's JWKS, then `iss`, `aud`, `exp` and `nonce`. The provider
is found through its discovery document, whose `issuer` must be the configured one (OpenID
Connect Discovery 1.0 §4.3). The process keeps the discovery document and the JWKS for
`metadata_ttl_s`, and concurrent sign-ins share one fetch of each. What the browser must bring
back (`state`, `nonce`, the PKCE verifier) is kept in a short-lived cookie of its own, so the
callback may reach any worker. Sign-ins started are limited per client address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import httpx

from guardproxy.admin.auth import MAX_TRACKED_ADDRESSES
from guardproxy.admin.reviewers import RANKS, Reviewer
from guardproxy.config import OidcSettings, Role
from guardproxy.errors import AuthenticationError

if TYPE_CHECKING:
    from joserfc.jwk import KeySet, KeySetSerialization

PENDING_COOKIE = "guardproxy_oidc"
PENDING_S = 600  # a sign-in not finished in ten minutes starts again
TOKEN_BYTES = 43  # 43 to 128 characters for a PKCE verifier (RFC 7636 §4.1)
CLOCK_LEEWAY_S = 60
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
TIMEOUT_S = 10.0
# A token naming a key the cached JWKS lacks refetches it (the provider rotated its keys), but
# not within a minute of the last fetch: a provider signing with an unpublished key cannot make
# every sign-in fetch the JWKS again.
KEY_REFETCH_MIN_S = 60.0
# Sign-ins one client address may start in a window; past it, 429 until the window ends.
MAX_STARTS = 30
START_WINDOW_S = 60.0

T = TypeVar("T")


# What the sign-in reads from the discovery document.
DISCOVERED_URLS = ("authorization_endpoint", "token_endpoint", "jwks_uri")


class SignInRefused(AuthenticationError):
    """The provider's answer did not prove who signed in, or gave them no role."""


@dataclass(frozen=True)
class Pending:
    """What the browser carries between the redirect to the provider and the callback."""

    state: str
    nonce: str
    verifier: str
    next: str

    def cookie(self) -> str:
        document = json.dumps([self.state, self.nonce, self.verifier, self.next])
        return base64.urlsafe_b64encode(document.encode()).decode()

    @classmethod
    def of(cls, cookie: str) -> Pending | None:
        try:
            parts = json.loads(base64.urlsafe_b64decode(cookie.encode()))
        except ValueError:
            return None
        if not (isinstance(parts, list) and len(parts) == 4):
            return None
        return cls(*(str(part) for part in parts))


class Cached(Generic[T]):
    """What `fetch` gives, kept for `ttl_s` seconds of `clock`. Callers who need it while it is
    being fetched wait for that fetch rather than start their own."""

    def __init__(
        self, fetch: Callable[[], Awaitable[T]], ttl_s: float, clock: Callable[[], float]
    ) -> None:
        self.fetch, self.ttl_s, self.clock = fetch, ttl_s, clock
        self.value: T | None = None
        self.fetched_at = -math.inf
        self._flight: asyncio.Task[T] | None = None

    def age(self) -> float:
        return self.clock() - self.fetched_at

    async def get(self) -> T:
        if self.value is not None and self.age() < self.ttl_s:
            return self.value
        return await self.refresh()

    async def refresh(self) -> T:
        """A new value: from a fetch of its own, or the one already under way."""
        if self._flight is None:
            self._flight = asyncio.create_task(self._fetched())
        # Shielded: a caller that goes away (its browser closed) leaves the fetch to the others.
        return await asyncio.shield(self._flight)

    async def _fetched(self) -> T:
        try:
            value = await self.fetch()
            self.value, self.fetched_at = value, self.clock()
            return value
        finally:
            self._flight = None  # a failed fetch is not kept: the next caller tries again


class StartThrottle:
    """At most `MAX_STARTS` sign-ins started per client address in a `START_WINDOW_S` window:
    each start mints state for a cookie and may have the proxy fetch the discovery document."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.windows: dict[str, tuple[float, int]] = {}  # address -> (window start, starts)

    def take(self, address: str) -> int | None:
        """Counts one start from `address`: None when it may go ahead, else seconds to wait."""
        now = self.clock()
        began, starts = self.windows.get(address, (now, 0))
        if now >= began + START_WINDOW_S:
            began, starts = now, 0
        if starts >= MAX_STARTS:
            return max(math.ceil(began + START_WINDOW_S - now), 1)
        if address not in self.windows and len(self.windows) >= MAX_TRACKED_ADDRESSES:
            self._forget_ended(now)
        self.windows[address] = (began, starts + 1)
        return None

    def _forget_ended(self, now: float) -> None:
        cutoff = now - START_WINDOW_S
        self.windows = {a: w for a, w in self.windows.items() if w[0] > cutoff}
        if len(self.windows) >= MAX_TRACKED_ADDRESSES:
            self.windows.clear()  # under a flood of addresses, forget rather than grow


class OidcSignIn:
    """One provider, reached through `transport` when one is given (else httpx's own). Its
    discovery document and JWKS are kept for `metadata_ttl_s` of `clock`; a client is opened
    per request to the provider, which is rare enough that no pool is worth keeping."""

    def __init__(
        self,
        settings: OidcSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.transport = settings, transport
        self.metadata = Cached(self._discovered, settings.metadata_ttl_s, clock)
        self.jwks = Cached(self._fetched_keys, settings.metadata_ttl_s, clock)

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, timeout=TIMEOUT_S)

    async def begin(self, redirect_uri: str, next_path: str) -> tuple[str, Pending]:
        """Where to send the browser, and what it must bring back."""
        from authlib.common.security import generate_token  # type: ignore[import-untyped]
        from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
            prepare_grant_uri,
        )
        from authlib.oauth2.rfc7636 import (  # type: ignore[import-untyped]
            create_s256_code_challenge,
        )

        meta = await self.metadata.get()
        pending = Pending(
            generate_token(), generate_token(), generate_token(TOKEN_BYTES), next_path
        )
        url = prepare_grant_uri(
            meta["authorization_endpoint"], self.settings.client_id, "code", redirect_uri,
            " ".join(self.settings.scopes), pending.state, nonce=pending.nonce,
            code_challenge=create_s256_code_challenge(pending.verifier),
            code_challenge_method="S256",
        )  # fmt: skip
        return str(url), pending

    async def finish(self, query: dict[str, str], pending: Pending, redirect_uri: str) -> Reviewer:
        """The reviewer the provider vouches for, or SignInRefused."""
        if "error" in query:
            raise SignInRefused(f"the provider refused: {query['error']}")
        if not query.get("code") or query.get("state") != pending.state:
            raise SignInRefused("the sign-in does not match the one this browser started")
        meta = await self.metadata.get()
        id_token = await self._exchange(meta, query["code"], pending, redirect_uri)
        return self._reviewer(await self._verified(id_token, pending.nonce))

    async def _discovered(self) -> dict[str, Any]:
        url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
        meta = await self._get_json(url)
        if meta.get("issuer") != self.settings.issuer:
            raise SignInRefused("the provider's discovery document names another issuer")
        missing = [k for k in DISCOVERED_URLS if not isinstance(meta.get(k), str) or not meta[k]]
        if missing:  # refused here, before anything reads them, and not cached
            raise SignInRefused(f"the provider's discovery document has no {missing[0]}")
        return meta

    async def _fetched_keys(self) -> KeySet:
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        jwks = await self._get_json((await self.metadata.get())["jwks_uri"])
        try:
            return KeySet.import_key_set(cast("KeySetSerialization", jwks))
        except (JoseError, ValueError, KeyError) as exc:
            raise SignInRefused("the provider's JWKS holds no usable key") from exc

    async def _keys(self, kid: str | None) -> KeySet:
        """The provider's keys, fetched again once if they lack `kid` and are not new."""
        keys = await self.jwks.get()
        if kid is None or any(key.kid == kid for key in keys.keys):
            return keys
        if self.jwks.age() < KEY_REFETCH_MIN_S:
            return keys  # fetched a moment ago: the token's key is not the provider's
        return await self.jwks.refresh()

    async def _get_json(self, url: str) -> dict[str, Any]:
        async with self._client() as client:
            return await _get_json(client, url)

    async def _exchange(
        self,
        meta: dict[str, Any],
        code: str,
        pending: Pending,
        redirect_uri: str,
    ) -> str:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": pending.verifier,
        }
        auth = (self.settings.client_id, self.settings.client_secret)  # client_secret_basic
        try:
            async with self._client() as client:
                reply = await client.post(meta["token_endpoint"], data=form, auth=auth)
            token = reply.raise_for_status().json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SignInRefused("the provider did not exchange the code") from exc
        if not isinstance(token, dict) or not isinstance(token.get("id_token"), str):
            raise SignInRefused("the provider returned no ID token")
        return str(token["id_token"])

    async def _verified(self, id_token: str, nonce: str) -> dict[str, Any]:
        from joserfc import jws, jwt
        from joserfc.errors import JoseError

        try:
            kid = jws.extract_compact(id_token.encode()).protected.get("kid")
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"the ID token is not valid: {exc}") from exc
        keys = await self._keys(kid if isinstance(kid, str) else None)
        registry = jwt.JWTClaimsRegistry(
            leeway=CLOCK_LEEWAY_S,
            iss={"essential": True, "value": self.settings.issuer},
            aud={"essential": True, "value": self.settings.client_id},
            exp={"essential": True},
            sub={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            registry.validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"the ID token is not valid: {exc}") from exc
        return dict(token.claims)

    def _reviewer(self, claims: dict[str, Any]) -> Reviewer:
        role = self._role(claims.get(self.settings.roles_claim))
        if role is None:
            raise SignInRefused(f"the ID token's {self.settings.roles_claim!r} gives no role")
        name = next(
            str(claims[c])
            for c in (self.settings.name_claim, "preferred_username", "sub")
            if claims.get(c)
        )
        tenants = self._tenants(claims)
        if role == "admin" and tenants is not None:  # see AdminUser: admins are never scoped
            raise SignInRefused("an admin role with a tenants claim: admins see every tenant")
        return Reviewer(name, role, tenants)

    def _role(self, value: Any) -> Role | None:
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        roles = [
            self.settings.roles[n] for n in names if isinstance(n, str) and n in self.settings.roles
        ]
        return max(roles, key=RANKS.__getitem__, default=None)

    def _tenants(self, claims: dict[str, Any]) -> tuple[str, ...] | None:
        if self.settings.tenants_claim is None:
            return None
        value = claims.get(self.settings.tenants_claim)
        tenants = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        if not tenants or not all(isinstance(t, str) for t in tenants):
            # Configured to narrow and nothing to narrow to: never widen to every tenant.
            raise SignInRefused(f"the ID token has no {self.settings.tenants_claim!r}")
        return tuple(tenants)


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        found = (await client.get(url)).raise_for_status().json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SignInRefused(f"the provider could not be read at {url}") from exc
    if not isinstance(found, dict):
        raise SignInRefused(f"the provider's {url} is no JSON object")
    return found
