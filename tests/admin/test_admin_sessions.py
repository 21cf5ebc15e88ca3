"""The reviewer page's sessions and headers: a cookie cannot be forged from the config, the server
chooses its expiry, logging out ends it on the server, failed logins are limited, a reload
cannot give a tenant an admin key, and every response carries the browser protections."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.requests import Request

from guardproxy.admin.auth import COOKIE, MAX_FAILED_LOGINS, AdminAccess
from guardproxy.admin.reviewers import Directory, Keyed, Reviewer
from guardproxy.admin.sessions import MemorySessions
from guardproxy.config import load_settings
from guardproxy.policy.loader import load_policies
from guardproxy.yamlfile import InvalidConfig
from tests.admin.conftest import ADMIN_KEY, start_reviewed
from tests.conftest import ProxyFactory

HOURS = 8


def login(url: str, key: str = ADMIN_KEY, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/admin/login", data={"key": key, "next": "/admin/"}, headers=headers)


def session_of(reply: httpx.Response) -> str:
    assert reply.status_code == 303, reply.text
    return reply.cookies[COOKIE]


@pytest.fixture
def url(start_proxy: ProxyFactory, tmp_path: Path) -> str:
    return start_reviewed(start_proxy, tmp_path).url


def test_a_cookie_made_from_the_admin_keys_digest_is_refused(url: str) -> None:
    """The digest sits in the config as `sha256:`; it signs nothing."""
    digest = hashlib.sha256(ADMIN_KEY.encode()).digest()
    expires = int(time.time()) + 10 * 365 * 86400
    forged = f"{expires}.{hmac.new(digest, str(expires).encode(), hashlib.sha256).hexdigest()}"
    reply = httpx.get(f"{url}/admin/", cookies={COOKIE: forged})
    assert reply.status_code == 303  # to the login form


def test_a_session_is_an_opaque_token_that_opens_the_pages(url: str) -> None:
    token = session_of(login(url))
    assert "." not in token  # no expiry or anything else for the client to edit
    assert len(token) >= 40
    assert httpx.get(f"{url}/admin/", cookies={COOKIE: token}).status_code == 200


def test_logging_out_ends_the_session_on_the_server(url: str) -> None:
    token = session_of(login(url))
    httpx.post(f"{url}/admin/logout", cookies={COOKIE: token})
    replayed = httpx.get(f"{url}/admin/", cookies={COOKIE: token})
    assert replayed.status_code == 303


@pytest.mark.anyio
async def test_the_server_chooses_when_a_session_ends() -> None:
    admin = Reviewer("admin", "admin")
    digest = hashlib.sha256(ADMIN_KEY.encode()).digest()
    store = MemorySessions()
    access = AdminAccess(Directory((Keyed(admin, digest),), HOURS * 3600), lambda: store)
    now = 1_000_000.0
    token = await access.open(admin, digest.hex(), now)
    request = browser(token)
    assert await access.admits(request, now + HOURS * 3600 - 1) == admin
    assert await access.admits(request, now + HOURS * 3600 + 1) is None
    removed = AdminAccess(Directory((), HOURS * 3600), lambda: store)
    assert await removed.admits(request, now + 1) is None  # its admin key was removed


def browser(token: str) -> Request:
    cookie = f"{COOKIE}={token}".encode()
    return Request({"type": "http", "method": "GET", "headers": [(b"cookie", cookie)]})


def test_failed_logins_are_limited_per_address(url: str) -> None:
    for _ in range(MAX_FAILED_LOGINS):
        assert login(url, "not-the-key").status_code == 401
    limited = login(url)  # even the right key waits now
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert COOKIE not in limited.cookies


LOOPBACK_PROXY = {"trusted_proxies": ["127.0.0.1/32"]}


@pytest.mark.parametrize(
    ("admin", "headers", "secure"),
    [
        ({}, {}, False),
        ({"public_url": "https://review.example.com"}, {}, True),
        ({}, {"x-forwarded-proto": "https"}, False),  # from a peer no one trusts
        (LOOPBACK_PROXY, {"x-forwarded-proto": "https"}, True),  # from a trusted proxy
        ({"public_url": "http://review.internal"}, {"x-forwarded-proto": "https"}, False),
    ],
)
def test_the_cookie_is_secure_as_the_browser_reaches_the_page(
    start_proxy: ProxyFactory,
    tmp_path: Path,
    admin: dict[str, Any],
    headers: dict[str, str],
    secure: bool,
) -> None:
    proxy = start_reviewed(start_proxy, tmp_path, **admin)
    cookie = login(proxy.url, **headers).headers["set-cookie"]
    assert ("; secure" in cookie.lower()) == secure
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()


def test_every_admin_response_carries_the_browser_protections(url: str) -> None:
    token = session_of(login(url))
    for path in ("/admin/", "/admin/login", "/admin/api/decisions", "/admin/playground"):
        reply = httpx.get(f"{url}{path}", cookies={COOKIE: token})
        assert reply.headers["x-content-type-options"] == "nosniff", path
        assert reply.headers["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in reply.headers["content-security-policy"], path
    page = httpx.get(f"{url}/admin/", cookies={COOKIE: token})
    nonce = re.search(r"'nonce-([^']+)'", page.headers["content-security-policy"])
    assert nonce is not None
    assert f'<style nonce="{nonce.group(1)}">' in page.text
    assert "unsafe-inline" not in page.headers["content-security-policy"]


@pytest.mark.parametrize("page", ["abc", "0", "-1", "1.5", "9" * 5000, "100001", "٣"])
def test_an_odd_page_number_is_a_400(url: str, page: str) -> None:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    for path in ("/admin/", "/admin/api/decisions"):
        reply = httpx.get(f"{url}{path}", params={"page": page}, headers=headers)
        assert reply.status_code == 400, (path, reply.text)


def test_a_reload_cannot_give_a_tenant_an_admin_key(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy = start_reviewed(start_proxy, tmp_path)
    config = proxy.policies_dir.parent / "guardproxy.yaml"
    settings = load_settings(config, {"TEST_TENANT_KEY": proxy.key})
    bank = yaml.safe_load((proxy.policies_dir / "bank.yaml").read_text())
    (proxy.policies_dir / "bank.yaml").write_text(yaml.safe_dump({**bank, "keys": [ADMIN_KEY]}))
    with pytest.raises(InvalidConfig, match="also an admin key"):
        load_policies(settings, {"TEST_TENANT_KEY": proxy.key})
