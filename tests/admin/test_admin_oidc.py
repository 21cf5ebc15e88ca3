"""Signing in to the reviewer page through OpenID Connect, end to end against a provider the
tests start on 127.0.0.1: the role and tenants come from the ID token, and an ID token for
another audience, an expired one, a forged callback or one without a known role opens
nothing (and is logged)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardproxy.admin.auth import COOKIE
from tests.admin.conftest import ADMIN_KEY, Reviewed, start_reviewed, with_traffic
from tests.admin.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, create_provider
from tests.conftest import ProxyFactory
from tests.fakes.server import run_in_thread


@pytest.fixture
def provider() -> Iterator[Provider]:
    found = Provider()
    with run_in_thread(create_provider(found)) as url:
        found.issuer = url
        yield found


@pytest.fixture
def signed(start_proxy: ProxyFactory, tmp_path: Path, provider: Provider) -> Reviewed:
    oidc = {
        "issuer": provider.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "roles_claim": "groups",
        "roles": {"trust-and-safety": "reviewer", "ops": "viewer"},
        "tenants_claim": "tenants",
    }
    return with_traffic(start_reviewed(start_proxy, tmp_path, oidc=oidc))


@pytest.fixture
def browser(signed: Reviewed) -> Iterator[httpx.Client]:
    """Keeps its cookies, as a browser does."""
    with httpx.Client(base_url=signed.proxy.url) as client:
        yield client


def sign_in(browser: httpx.Client) -> httpx.Response:
    """Through the provider and back: the reviewer page's answer to the callback."""
    start = browser.get("/admin/oidc/start", params={"next": "/admin/"})
    assert start.status_code == 303, start.text
    at_provider = httpx.get(start.headers["location"])
    assert at_provider.status_code == 302, at_provider.text
    return browser.get(at_provider.headers["location"])


def access_log(base_url: str) -> list[dict[str, Any]]:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    found: list[dict[str, Any]] = httpx.get(f"{base_url}/admin/api/access", headers=headers).json()[
        "data"
    ]
    return found


def test_a_provider_sign_in_gives_the_role_and_tenants_of_the_id_token(
    signed: Reviewed, provider: Provider, browser: httpx.Client
) -> None:
    provider.claims = {"email": "tess@example.com", "groups": ["ops", "trust-and-safety"]}
    provider.claims["tenants"] = ["acme"]
    back = sign_in(browser)
    assert back.status_code == 303
    assert back.headers["location"] == "/admin/"
    assert COOKIE in browser.cookies
    listed = browser.get("/admin/api/decisions").json()
    assert {row["tenant"] for row in listed["data"]} == {"acme"}
    one = browser.get(f"/admin/api/decisions/{signed.blocked['acme']}").json()
    assert one["content"]["prompt"]  # the higher of the two roles: reviewer
    assert browser.get("/admin/api/access").status_code == 403
    assert browser.get(f"/admin/api/decisions/{signed.blocked['bank']}").status_code == 404
    signed_in = [e for e in access_log(signed.proxy.url) if e["event"] == "sign_in"]
    assert signed_in[0]["actor"] == "tess@example.com"
    assert signed_in[0]["detail"] == {"method": "oidc", "role": "reviewer"}


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "another-client"}, "aud"),
        ({"exp": int(time.time()) - 3600}, "exp"),
        ({"groups": ["marketing"]}, "gives no role"),
        ({"tenants": None}, "tenants"),
    ],
    ids=["wrong-audience", "expired", "no-known-role", "no-tenants-claim"],
)
def test_an_id_token_that_proves_nothing_opens_nothing(
    signed: Reviewed,
    provider: Provider,
    browser: httpx.Client,
    claims: dict[str, Any],
    reason: str,
) -> None:
    provider.claims = {"groups": ["trust-and-safety"], "tenants": ["bank"], **claims}
    back = sign_in(browser)
    assert back.status_code == 401
    assert "Sign-in refused" in back.text
    assert COOKIE not in browser.cookies
    assert browser.get("/admin/api/decisions").status_code == 401
    failed = [e for e in access_log(signed.proxy.url) if e["event"] == "sign_in_failed"]
    assert len(failed) == 1
    assert reason in failed[0]["detail"]["reason"]


def test_a_callback_for_a_sign_in_this_browser_did_not_start_is_refused(
    provider: Provider, browser: httpx.Client
) -> None:
    provider.claims = {"groups": ["trust-and-safety"], "tenants": ["bank"]}
    start = browser.get("/admin/oidc/start")
    at_provider = httpx.get(start.headers["location"])
    forged = at_provider.headers["location"].replace("state=", "state=x")
    back = browser.get(forged)
    assert back.status_code == 401
    assert COOKIE not in browser.cookies


def test_sign_ins_fetch_the_discovery_document_and_jwks_once(
    signed: Reviewed, provider: Provider
) -> None:
    provider.claims = {"groups": ["ops"], "tenants": ["acme"]}
    for _ in range(2):
        with httpx.Client(base_url=signed.proxy.url) as browser:
            assert sign_in(browser).status_code == 303
            assert browser.get("/admin/api/decisions").status_code == 200
    assert provider.hits == {"discovery": 1, "jwks": 1}
