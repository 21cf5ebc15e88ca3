"""Labels in a real browser (Debian's chromium, as test_admin_browser.py drives it): a reviewer
labels a decision from its page, the list filters by that label, and a viewer is offered no
label form."""

from __future__ import annotations

import pytest

from tests.admin.conftest import REVIEWER_KEY, VIEWER_KEY, Reviewed
from tests.admin.test_admin_browser import CHROMIUM, page, screenshot, sign_in

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="GUARDPROXY_CHROMIUM is not set")
__all__ = ["page"]  # the fixture

if CHROMIUM:
    from playwright.sync_api import Page, expect


def test_a_reviewer_labels_a_decision_and_the_list_filters_by_it(
    page: Page, staffed: Reviewed
) -> None:
    url, acme = staffed.proxy.url, staffed.blocked["acme"]
    sign_in(page, url, REVIEWER_KEY)
    page.goto(f"{url}/admin/decisions/{acme}")
    expect(page.get_by_text("Not labelled yet.")).to_be_visible()
    form = page.get_by_role("form", name="Label this decision")
    form.locator('select[name="label"]').select_option("false_positive")
    expect(form.get_by_label("Categories that apply")).to_have_value(
        "Violence, Guns and Illegal Weapons"
    )
    form.get_by_label("Categories that apply").fill("Violence")
    form.get_by_label("Note").fill("a question about a film")
    form.get_by_role("button", name="Save label").click()
    expect(page).to_have_url(f"{url}/admin/decisions/{acme}#labels")
    labels = page.locator("tr.decision-label")
    expect(labels).to_have_count(1)
    expect(labels.first).to_contain_text("rita")
    expect(labels.first).to_contain_text("false_positive")
    expect(labels.first).to_contain_text("a question about a film")
    screenshot(page, "decision-label.png")
    page.get_by_role("link", name="Back to decisions").click()
    page.locator('select[name="label"]').select_option("false_positive")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("heading", name="1 decision")).to_be_visible()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td.label")).to_have_text("false_positive")
    expect(rows.first.get_by_role("link")).to_have_attribute("href", f"/admin/decisions/{acme}")


def test_a_viewer_is_offered_no_label_form(page: Page, staffed: Reviewed) -> None:
    sign_in(page, staffed.proxy.url, VIEWER_KEY)
    page.goto(f"{staffed.proxy.url}/admin/decisions/{staffed.blocked['acme']}")
    expect(page.get_by_role("heading", name="Labels")).to_be_visible()
    expect(page.get_by_role("form", name="Label this decision")).to_have_count(0)
