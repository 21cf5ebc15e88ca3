"""The reviewer page through httpx: the same assertions the browser tests make, always run
(the browser tests need Debian's chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from guardproxy.errors import ConfigError
from tests.admin.conftest import ADMIN_KEY, UNSAFE, Reviewed, start_reviewed
from tests.conftest import TENANT_KEY, ProxyFactory
from tests.fakes.guard import DEFAULT_TRACE
from tests.fakes.server import free_port


@contextmanager
def signed_in(base_url: str) -> Iterator[httpx.Client]:
    """A client that signed in through the login form, as a browser does."""
    with httpx.Client(base_url=base_url) as client:
        reply = client.post("/admin/login", data={"key": ADMIN_KEY, "next": "/admin/"})
        assert reply.status_code == 303
        assert "guardproxy_admin" in client.cookies
        yield client


def test_filtering_to_one_tenants_blocks_lists_only_that_block(reviewed: Reviewed) -> None:
    with signed_in(reviewed.proxy.url) as client:
        page = client.get("/admin/", params={"tenant": "acme", "action": "block"}).text
    assert "1 decision<" in page
    assert f"/admin/decisions/{reviewed.blocked['acme']}" in page
    assert reviewed.blocked["bank"] not in page
    assert "input: Violence" in page
    assert 'aria-label="Blocks per category, last 24 hours: ' in page


def test_a_decision_page_shows_its_verdicts_and_the_reasoning_trace(reviewed: Reviewed) -> None:
    with signed_in(reviewed.proxy.url) as client:
        page = client.get(f"/admin/decisions/{reviewed.blocked['acme']}").text
    assert "Input verdict: unsafe" in page
    assert "Reasoning trace" in page
    assert DEFAULT_TRACE[:60] in page
    assert UNSAFE in page  # audit_content: redacted keeps the prompt (nothing to mask in it)


def test_the_playground_runs_a_check_with_the_tenants_policy(reviewed: Reviewed) -> None:
    with signed_in(reviewed.proxy.url) as client:
        form = {"tenant": "acme", "prompt": UNSAFE, "response": "", "image": ""}
        page = client.post("/admin/playground", data=form).text
    assert '<dd class="verdict">unsafe</dd>' in page
    assert '<dd class="action-block">block</dd>' in page
    assert "Violence" in page


def test_the_policy_view_shows_the_exact_guard_request(reviewed: Reviewed) -> None:
    with signed_in(reviewed.proxy.url) as client:
        page = client.get("/admin/policies", params={"tenant": "bank"}).text
    assert "# tenant bank, input check, guard nemotron" in page
    assert "/chat/completions" in page


def test_a_tenant_key_does_not_open_the_admin_pages(reviewed: Reviewed) -> None:
    url = reviewed.proxy.url
    refused = httpx.get(f"{url}/admin/", headers={"authorization": f"Bearer {TENANT_KEY}"})
    assert refused.status_code == 401
    assert "tenant key does not open" in refused.json()["error"]["message"]
    api = httpx.get(f"{url}/admin/api/decisions", headers={"authorization": f"Bearer {TENANT_KEY}"})
    assert api.status_code == 401
    login = httpx.post(f"{url}/admin/login", data={"key": TENANT_KEY})
    assert login.status_code == 401
    assert "tenant key does not open" in login.text
    assert "guardproxy_admin" not in login.cookies


def test_a_browser_without_a_session_is_sent_to_the_login_form(reviewed: Reviewed) -> None:
    reply = httpx.get(f"{reviewed.proxy.url}/admin/decisions/x")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/admin/login?next=%2Fadmin%2Fdecisions%2Fx"


def test_a_forged_or_expired_session_cookie_is_refused(reviewed: Reviewed) -> None:
    url = reviewed.proxy.url
    for cookie in ("99999999999.deadbeef", "1.0", "garbage"):
        reply = httpx.get(f"{url}/admin/", cookies={"guardproxy_admin": cookie})
        assert reply.status_code == 303


def test_the_admin_api_answers_a_bearer_admin_key(reviewed: Reviewed) -> None:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    url = reviewed.proxy.url
    found = httpx.get(f"{url}/admin/api/decisions", params={"action": "block"}, headers=headers)
    assert found.json()["total"] == 2
    one = httpx.get(f"{url}/admin/api/decisions/{reviewed.blocked['bank']}", headers=headers)
    assert one.json()["input"]["categories"] == ["Violence", "Guns and Illegal Weapons"]


def test_an_admin_port_serves_the_pages_there_and_not_on_the_main_port(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    port = free_port()
    proxy = start_reviewed(start_proxy, tmp_path, port=port)
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(f"{proxy.url}/admin/api/decisions", headers=headers).status_code == 404
    side = httpx.get(f"http://127.0.0.1:{port}/admin/api/decisions", headers=headers)
    assert side.status_code == 200


def test_an_admin_key_that_is_also_a_tenant_key_is_refused_at_start(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="also an admin key"):
        start_proxy(config_extra={"admin": {"keys": [TENANT_KEY]}})
