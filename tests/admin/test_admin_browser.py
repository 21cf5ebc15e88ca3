"""The reviewer page in a real browser: Debian's chromium driven by Playwright. `.ci/run` sets
GUARDPROXY_CHROMIUM where chromium could be installed; without it these are skipped and
test_admin_http.py makes the same assertions through httpx."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from tests.admin.conftest import ADMIN_KEY, UNSAFE, Reviewed
from tests.conftest import TENANT_KEY
from tests.fakes.guard import DEFAULT_TRACE

CHROMIUM = os.environ.get("GUARDPROXY_CHROMIUM", "")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="GUARDPROXY_CHROMIUM is not set")
# As the machine's own notes start it: headless, and nothing that reaches for the network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if CHROMIUM:
    from playwright.sync_api import Page, expect, sync_playwright


@pytest.fixture
def page() -> Iterator[Page]:
    with (
        sync_playwright() as playwright,
        tempfile.TemporaryDirectory() as profile,
    ):
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=FLAGS, viewport={"width": 1366, "height": 768}
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()


def screenshot(page: Page, name: str) -> None:
    """For the README: GUARDPROXY_SCREENSHOTS=DIR keeps what the browser showed."""
    if folder := os.environ.get("GUARDPROXY_SCREENSHOTS"):
        page.screenshot(path=os.path.join(folder, name), full_page=True)


def sign_in(page: Page, base_url: str, key: str = ADMIN_KEY) -> None:
    page.goto(f"{base_url}/admin/")  # sent to the login form
    page.get_by_label("Reviewer key").fill(key)
    page.get_by_label("Reviewer key").press("Enter")


def test_filtering_to_one_tenants_blocks_and_opening_its_reasoning(
    page: Page, reviewed: Reviewed
) -> None:
    sign_in(page, reviewed.proxy.url)
    expect(page.get_by_role("heading", name="Decisions", exact=True)).to_be_visible()
    page.locator('select[name="tenant"]').select_option("acme")
    page.get_by_label("Action").select_option("block")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("heading", name="1 decision")).to_be_visible()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("acme")
    expect(rows.first).to_contain_text("input: Violence")
    expect(page.get_by_role("img", name="Blocks per category")).to_be_visible()
    screenshot(page, "decisions.png")
    rows.first.get_by_role("link").click()
    expect(page).to_have_url(f"{reviewed.proxy.url}/admin/decisions/{reviewed.blocked['acme']}")
    expect(page.get_by_role("heading", name="Input verdict: unsafe")).to_be_visible()
    expect(page.locator("pre.reasoning").first).to_contain_text(DEFAULT_TRACE[:60])
    screenshot(page, "decision.png")


def test_the_playground_runs_a_check(page: Page, reviewed: Reviewed) -> None:
    sign_in(page, reviewed.proxy.url)
    page.get_by_role("link", name="Playground").click()
    page.locator('select[name="tenant"]').select_option("bank")
    page.get_by_label("Prompt", exact=True).fill(UNSAFE)
    page.get_by_role("button", name="Check").click()
    expect(page.locator("dd.verdict")).to_have_text("unsafe")
    expect(page.locator("dd.action-block")).to_have_text("block")
    expect(page.get_by_role("region", name="Result")).to_contain_text("Violence")


def test_the_pages_can_be_used_from_the_keyboard(page: Page, reviewed: Reviewed) -> None:
    sign_in(page, reviewed.proxy.url)
    page.goto(f"{reviewed.proxy.url}/admin/")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Decisions")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Policies")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Policy as the guard receives it")).to_be_visible()
    expect(page.locator("pre.policy-text").first).to_contain_text("# tenant")


def test_a_tenant_key_is_refused_at_the_login_form(page: Page, reviewed: Reviewed) -> None:
    sign_in(page, reviewed.proxy.url, key=TENANT_KEY)
    expect(page.get_by_role("alert")).to_contain_text("A tenant key does not open")
    page.goto(f"{reviewed.proxy.url}/admin/")
    expect(page.get_by_label("Reviewer key")).to_be_visible()  # still signed out
