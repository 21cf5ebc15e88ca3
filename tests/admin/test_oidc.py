"""The OpenID Connect sign-in's hold on the provider, on a clock the tests turn: the discovery
document and JWKS are fetched once per `metadata_ttl_s` and once for concurrent sign-ins, a
rotated key is fetched once, an unknown key at most once a minute, and sign-ins started are
limited per client address."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from guardproxy.admin.auth import MAX_FAILED_LOGINS
from guardproxy.admin.oidc import (
    KEY_REFETCH_MIN_S,
    MAX_STARTS,
    START_WINDOW_S,
    Cached,
    OidcSignIn,
    SignInRefused,
)
from guardproxy.admin.reviewers import Directory, Reviewer
from guardproxy.admin.site import AdminSite
from guardproxy.config import AdminSettings, OidcSettings
from tests.admin.conftest import ADMIN_KEY
from tests.admin.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, create_provider, new_key

ISSUER = "http://provider.test"
REDIRECT = "http://review.test/admin/oidc/callback"

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Gated(httpx.AsyncBaseTransport):
    """The provider, answering nothing until `opened` is set."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.opened = inner, asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.opened.wait()
        return await self.inner.handle_async_request(request)


@pytest.fixture
def provider() -> Provider:
    found = Provider(issuer=ISSUER)
    found.claims = {"groups": ["ops"], "email": "olga@example.com"}
    return found


@pytest.fixture
def transport(provider: Provider) -> httpx.AsyncBaseTransport:
    return httpx.ASGITransport(create_provider(provider))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def settings(**extra: Any) -> OidcSettings:
    return OidcSettings(
        issuer=ISSUER, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
        roles_claim="groups", roles={"ops": "viewer"}, **extra,
    )  # fmt: skip


@pytest.fixture
def oidc(transport: httpx.AsyncBaseTransport, clock: Clock) -> OidcSignIn:
    return OidcSignIn(settings(metadata_ttl_s=600), transport, clock)


async def sign_in(oidc: OidcSignIn, provider: Provider) -> Reviewer:
    """Begin, have the provider authorize, and finish, as a browser would."""
    url, pending = await oidc.begin(REDIRECT, "/admin/")
    app = httpx.ASGITransport(create_provider(provider))
    async with httpx.AsyncClient(transport=app) as browser:
        back = (await browser.get(url)).headers["location"]
    return await oidc.finish(dict(parse_qsl(urlsplit(back).query)), pending, REDIRECT)


async def test_sign_ins_fetch_the_provider_documents_once(
    oidc: OidcSignIn, provider: Provider
) -> None:
    for _ in range(3):
        assert (await sign_in(oidc, provider)).role == "viewer"
    assert provider.hits == {"discovery": 1, "jwks": 1}


async def test_concurrent_sign_ins_share_one_fetch(provider: Provider, clock: Clock) -> None:
    gated = Gated(httpx.ASGITransport(create_provider(provider)))
    oidc = OidcSignIn(settings(), gated, clock)
    # The provider answers nothing yet, so each sign-in finds the other's fetch under way.
    both = [asyncio.create_task(sign_in(oidc, provider)) for _ in range(2)]
    await asyncio.sleep(0)
    gated.opened.set()
    assert [r.name for r in await asyncio.gather(*both)] == ["olga@example.com"] * 2
    assert provider.hits == {"discovery": 1, "jwks": 1}


async def test_documents_past_their_ttl_are_fetched_again(
    oidc: OidcSignIn, provider: Provider, clock: Clock
) -> None:
    await sign_in(oidc, provider)
    clock.now += 599
    await sign_in(oidc, provider)
    assert provider.hits == {"discovery": 1, "jwks": 1}
    clock.now += 2
    await sign_in(oidc, provider)
    assert provider.hits == {"discovery": 2, "jwks": 2}


async def test_a_rotated_key_is_fetched_once_and_signs_in(
    oidc: OidcSignIn, provider: Provider, clock: Clock
) -> None:
    await sign_in(oidc, provider)
    provider.rotate("test-2")
    clock.now += KEY_REFETCH_MIN_S
    assert (await sign_in(oidc, provider)).role == "viewer"
    await sign_in(oidc, provider)
    assert provider.hits == {"discovery": 1, "jwks": 2}


async def test_an_unknown_key_is_refused_and_fetched_for_at_most_once_a_minute(
    oidc: OidcSignIn, provider: Provider, clock: Clock
) -> None:
    await sign_in(oidc, provider)
    provider.published = [provider.key]
    provider.key = new_key("unpublished")  # signs, but the JWKS keeps the old key
    clock.now += KEY_REFETCH_MIN_S
    for _ in range(3):
        with pytest.raises(SignInRefused, match="unpublished"):
            await sign_in(oidc, provider)
    assert provider.hits["jwks"] == 2  # one refetch, then refused from the cache
    clock.now += KEY_REFETCH_MIN_S
    with pytest.raises(SignInRefused, match="unpublished"):
        await sign_in(oidc, provider)
    assert provider.hits["jwks"] == 3


async def test_a_rotation_just_after_a_fetch_waits_for_the_next_minute(
    oidc: OidcSignIn, provider: Provider, clock: Clock
) -> None:
    await sign_in(oidc, provider)
    provider.rotate("test-2")
    with pytest.raises(SignInRefused, match="test-2"):
        await sign_in(oidc, provider)
    clock.now += KEY_REFETCH_MIN_S
    assert (await sign_in(oidc, provider)).role == "viewer"
    assert provider.hits["jwks"] == 2


async def test_a_failed_fetch_is_not_kept(clock: Clock) -> None:
    fetches = [0]

    async def fetch() -> str:
        fetches[0] += 1
        if fetches[0] == 1:
            raise SignInRefused("the provider could not be read")
        return "found"

    cached = Cached(fetch, 60, clock)
    with pytest.raises(SignInRefused):
        await cached.get()
    assert await cached.get() == "found"
    assert fetches == [2]


async def test_a_caller_that_goes_away_leaves_the_fetch_to_the_others(clock: Clock) -> None:
    opened, fetches = asyncio.Event(), [0]

    async def fetch() -> int:
        fetches[0] += 1
        await opened.wait()
        return fetches[0]

    cached = Cached(fetch, 60, clock)
    leaving, staying = (asyncio.create_task(cached.get()) for _ in range(2))
    await asyncio.sleep(0)
    leaving.cancel()
    opened.set()
    assert await staying == 1
    assert leaving.cancelled()
    assert await cached.get() == 1
    assert fetches == [1]


# -- the start route's limit --------------------------------------------------------------


@pytest.fixture
def site(transport: httpx.AsyncBaseTransport, clock: Clock) -> Starlette:
    """The reviewer page alone, with no audit database (sessions and access log in memory)."""
    admin = AdminSettings(keys=(ADMIN_KEY,), oidc=settings())
    state = cast("Any", SimpleNamespace(audit_store=None))
    review = AdminSite(lambda: state, Directory.named(admin), admin, transport, clock)
    return Starlette(routes=review.routes())


def browser(site: Starlette, address: str) -> httpx.AsyncClient:
    app = httpx.ASGITransport(site, client=(address, 50_000))
    return httpx.AsyncClient(transport=app, base_url="http://review.test")


async def test_sign_ins_started_are_limited_per_address(
    site: Starlette, provider: Provider, clock: Clock
) -> None:
    async with browser(site, "192.0.2.1") as one, browser(site, "192.0.2.2") as other:
        for _ in range(MAX_STARTS):
            assert (await one.get("/admin/oidc/start")).status_code == 303
        clock.now += START_WINDOW_S - 10
        refused = await one.get("/admin/oidc/start")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "10"
        assert "guardproxy_oidc" not in refused.cookies
        assert (await other.get("/admin/oidc/start")).status_code == 303
        clock.now += 10
        assert (await one.get("/admin/oidc/start")).status_code == 303
    assert provider.hits["discovery"] == 1


async def test_an_address_locked_out_of_sign_in_cannot_start_one(
    site: Starlette, provider: Provider
) -> None:
    async with browser(site, "192.0.2.1") as client:
        assert (await client.get("/admin/oidc/start")).status_code == 303
        for _ in range(MAX_FAILED_LOGINS):
            forged = await client.get("/admin/oidc/callback?code=x&state=forged")
            assert forged.status_code == 401
        refused = await client.get("/admin/oidc/start")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert provider.hits["discovery"] == 1  # for the first start only


async def test_a_discovery_document_missing_an_endpoint_is_refused(clock: Clock) -> None:
    """Refused as a sign-in failure (401 on the page), never read later as a KeyError."""
    document = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/authorize"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=document))
    oidc = OidcSignIn(settings(), transport, clock)
    with pytest.raises(SignInRefused, match="no token_endpoint"):
        await oidc.begin(REDIRECT, "/admin/")
