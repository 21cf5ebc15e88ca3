"""Roles in a real browser (Debian's chromium, as test_admin_browser.py drives it): a viewer
sees no content, an admin reads the access log, and a tenant-scoped reviewer never sees
another tenant's decisions, by page or API."""

from __future__ import annotations

import pytest

from tests.admin.conftest import ADMIN_KEY, BANK_REVIEWER_KEY, UNSAFE, VIEWER_KEY, Reviewed
from tests.admin.test_admin_browser import CHROMIUM, page, sign_in
from tests.fakes.guard import DEFAULT_TRACE

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="GUARDPROXY_CHROMIUM is not set")
__all__ = ["page"]  # the fixture

if CHROMIUM:
    from playwright.sync_api import Page, expect


def test_a_viewer_sees_no_content(page: Page, staffed: Reviewed) -> None:
    sign_in(page, staffed.proxy.url, VIEWER_KEY)
    expect(page.get_by_text("vera (viewer)")).to_be_visible()
    expect(page.get_by_role("link", name="Playground")).to_have_count(0)
    page.goto(f"{staffed.proxy.url}/admin/decisions/{staffed.blocked['acme']}")
    expect(page.get_by_role("heading", name="Input verdict: unsafe")).to_be_visible()
    expect(page.locator("pre.reasoning")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text(UNSAFE)
    expect(page.locator("main")).not_to_contain_text(DEFAULT_TRACE[:40])


def test_an_admin_reads_the_access_log(page: Page, staffed: Reviewed) -> None:
    sign_in(page, staffed.proxy.url, VIEWER_KEY)
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, staffed.proxy.url, ADMIN_KEY)
    page.get_by_role("link", name="Access log").click()
    expect(page.get_by_role("heading", name="Access log")).to_be_visible()
    rows = page.locator("tr.access-event")
    expect(rows.first).to_contain_text("admin")  # newest first: the admin's own sign-in
    expect(page.get_by_role("table", name="Access log")).to_contain_text("vera")
    page.get_by_label("Who").fill("vera")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("sign_in")


def test_a_tenant_scoped_reviewer_never_sees_another_tenant(page: Page, staffed: Reviewed) -> None:
    url = staffed.proxy.url
    sign_in(page, url, BANK_REVIEWER_KEY)
    expect(page.get_by_role("heading", name="Decisions", exact=True)).to_be_visible()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    for row in rows.all():
        expect(row).to_contain_text("bank")
    expect(page.locator('select[name="tenant"]').locator("option", has_text="acme")).to_have_count(
        0
    )
    acme = staffed.blocked["acme"]
    opened = page.goto(f"{url}/admin/decisions/{acme}")
    assert opened is not None
    assert opened.status == 404
    by_api = page.request.get(f"{url}/admin/api/decisions/{acme}")  # with the page's cookie
    assert by_api.status == 404
    listed = page.request.get(f"{url}/admin/api/decisions?tenant=acme").json()
    assert listed["total"] == 0
