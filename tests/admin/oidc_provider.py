"""A small OpenID Connect provider for the tests: discovery, JWKS, an authorization endpoint
that signs in whoever the test names (no login form), and a token endpoint that checks the
client's secret, the code's redirect URI and its PKCE verifier, and signs an ID token with
joserfc. `Provider.claims` changes what the next ID token says (another audience, an expiry
in the past) to show the proxy refusing it; `Provider.key` signs it and `Provider.published`
is the JWKS, so a test can rotate keys or sign with one the JWKS lacks. `Provider.hits` counts
the requests for discovery and JWKS."""

from __future__ import annotations

import base64
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from authlib.oauth2.rfc7636 import create_s256_code_challenge  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "guardproxy-review"
CLIENT_SECRET = "client-secret-for-oidc-tests"


@dataclass(frozen=True)
class Grant:
    redirect_uri: str
    nonce: str
    challenge: str


def new_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, {"kid": kid})


@dataclass
class Provider:
    issuer: str = ""  # set once the server has a port
    key: RSAKey = field(default_factory=lambda: new_key("test-1"))  # signs the ID tokens
    published: list[RSAKey] | None = None  # the JWKS; None: `key` alone
    claims: dict[str, Any] = field(default_factory=dict)  # over the ID token's own
    grants: dict[str, Grant] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)  # "discovery", "jwks" -> requests

    def rotate(self, kid: str) -> None:
        """Sign with a new key from now on, and publish only it."""
        self.key, self.published = new_key(kid), None

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": "user-1", "aud": CLIENT_ID, "iat": now,
            "exp": now + 300, "nonce": grant.nonce, **self.claims,
        }  # fmt: skip
        return jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)


def create_provider(provider: Provider) -> Starlette:
    async def discovery(request: Request) -> Response:
        provider.hits["discovery"] += 1
        return JSONResponse(
            {
                "issuer": provider.issuer,
                "authorization_endpoint": f"{provider.issuer}/authorize",
                "token_endpoint": f"{provider.issuer}/token",
                "jwks_uri": f"{provider.issuer}/jwks",
                "response_types_supported": ["code"],
                "code_challenge_methods_supported": ["S256"],
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def jwks(request: Request) -> Response:
        provider.hits["jwks"] += 1
        published = provider.published or [provider.key]
        return JSONResponse({"keys": [key.as_dict(private=False) for key in published]})

    async def authorize(request: Request) -> Response:
        query = request.query_params
        if query.get("client_id") != CLIENT_ID or query.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, 400)
        code = secrets.token_urlsafe(16)
        provider.grants[code] = Grant(
            query["redirect_uri"], query["nonce"], query["code_challenge"]
        )
        back = urlencode({"code": code, "state": query["state"]})
        return RedirectResponse(f"{query['redirect_uri']}?{back}", 302)

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        grant = provider.grants.pop(form.get("code", ""), None)
        if not _client_authenticated(request) or grant is None:
            return JSONResponse({"error": "invalid_client"}, 401)
        verifier = form.get("code_verifier", "")
        if create_s256_code_challenge(verifier) != grant.challenge:
            return JSONResponse({"error": "invalid_grant"}, 400)
        if form.get("redirect_uri") != grant.redirect_uri:
            return JSONResponse({"error": "invalid_grant"}, 400)
        body = {"access_token": "x", "token_type": "Bearer", "id_token": provider.id_token(grant)}
        return JSONResponse(body)

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks", jwks),
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
        ]
    )


def _client_authenticated(request: Request) -> bool:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    client, _, secret = base64.b64decode(encoded).decode().partition(":")
    return client == CLIENT_ID and secrets.compare_digest(secret, CLIENT_SECRET)
