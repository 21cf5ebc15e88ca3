"""Named reviewers and their roles, on the pages and the JSON API alike: a viewer reads
decisions but no content, a tenant-scoped reviewer never sees another tenant's decisions, only
an admin reaches the playground, the policies and the access log, and a user who is removed
or changed loses their sessions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from guardproxy.admin.auth import COOKIE, AdminAccess
from guardproxy.admin.reviewers import Directory, Keyed, Reviewer
from guardproxy.admin.sessions import MemorySessions
from guardproxy.config import AdminSettings
from guardproxy.errors import ConfigError
from tests.admin.conftest import (
    ADMIN_KEY,
    BANK_REVIEWER_KEY,
    REVIEWER_KEY,
    UNSAFE,
    USERS,
    VIEWER_KEY,
    Reviewed,
)
from tests.conftest import TENANT_KEY, ProxyFactory
from tests.fakes.guard import DEFAULT_TRACE


def api(reviewed: Reviewed, key: str, path: str, **params: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.get(f"{reviewed.proxy.url}{path}", headers=headers, params=params)


def test_a_viewer_reads_decisions_but_no_content(staffed: Reviewed) -> None:
    request_id = staffed.blocked["acme"]
    one = api(staffed, VIEWER_KEY, f"/admin/api/decisions/{request_id}").json()
    assert one["action"] == "block"
    assert one["input"]["categories"]  # what was decided stays readable
    assert one["content"] is None
    assert one["input"]["reasoning"] is None
    page = api(staffed, VIEWER_KEY, f"/admin/decisions/{request_id}")
    assert page.status_code == 200
    assert UNSAFE not in page.text
    assert DEFAULT_TRACE[:40] not in page.text
    assert api(staffed, VIEWER_KEY, "/admin/api/decisions").json()["total"] == 4


def test_a_reviewer_reads_content_and_the_view_is_logged(staffed: Reviewed) -> None:
    request_id = staffed.blocked["acme"]
    one = api(staffed, REVIEWER_KEY, f"/admin/api/decisions/{request_id}").json()
    assert one["content"]["prompt"]
    assert one["input"]["reasoning"]
    log = api(staffed, ADMIN_KEY, "/admin/api/access").json()["data"]
    viewed = [e for e in log if e["event"] == "content_view"]
    assert [(e["actor"], e["request_id"]) for e in viewed] == [("rita", request_id)]
    assert viewed[0]["address"] == "127.0.0.1"


@pytest.mark.parametrize(
    "path", ["/admin/playground", "/admin/policies", "/admin/access", "/admin/api/access"]
)
@pytest.mark.parametrize("key", [VIEWER_KEY, REVIEWER_KEY])
def test_only_an_admin_reaches_the_playground_policies_and_access_log(
    staffed: Reviewed, key: str, path: str
) -> None:
    assert api(staffed, key, path).status_code == 403
    assert api(staffed, ADMIN_KEY, path).status_code == 200


def test_a_tenant_scoped_reviewer_never_sees_another_tenants_decisions(
    staffed: Reviewed,
) -> None:
    listed = api(staffed, BANK_REVIEWER_KEY, "/admin/api/decisions").json()
    assert listed["total"] == 2
    assert {row["tenant"] for row in listed["data"]} == {"bank"}
    asked = api(staffed, BANK_REVIEWER_KEY, "/admin/api/decisions", tenant="acme").json()
    assert asked["total"] == 0
    acme = staffed.blocked["acme"]
    assert api(staffed, BANK_REVIEWER_KEY, f"/admin/api/decisions/{acme}").status_code == 404
    assert api(staffed, BANK_REVIEWER_KEY, f"/admin/decisions/{acme}").status_code == 404
    page = api(staffed, BANK_REVIEWER_KEY, "/admin/")
    assert ">acme<" not in page.text  # neither a row nor a choice in the tenant filter
    assert acme not in page.text
    bank = staffed.blocked["bank"]
    assert api(staffed, BANK_REVIEWER_KEY, f"/admin/api/decisions/{bank}").status_code == 200


def test_sign_ins_and_failed_sign_ins_are_logged_and_exported(staffed: Reviewed) -> None:
    url = staffed.proxy.url
    httpx.post(f"{url}/admin/login", data={"key": "not-a-key", "next": "/admin/"})
    signed = httpx.post(f"{url}/admin/login", data={"key": VIEWER_KEY, "next": "/admin/"})
    assert signed.status_code == 303
    exported = api(staffed, ADMIN_KEY, "/admin/api/access", format="ndjson")
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    events = [json.loads(line) for line in exported.text.splitlines()]
    assert [(e["event"], e["actor"]) for e in events] == [
        ("export", "admin"),  # the export itself comes first
        ("sign_in", "vera"),
        ("sign_in_failed", "-"),
    ]
    assert events[1]["detail"] == {"method": "key", "role": "viewer"}
    assert events[2]["address"] == "127.0.0.1"


def test_the_access_log_page_lists_events_for_an_admin(staffed: Reviewed) -> None:
    httpx.post(f"{staffed.proxy.url}/admin/login", data={"key": REVIEWER_KEY, "next": "/"})
    page = api(staffed, ADMIN_KEY, "/admin/access", actor="rita")
    assert page.status_code == 200
    assert page.text.count('class="access-event"') == 1
    assert "sign_in" in page.text


@pytest.mark.anyio
async def test_a_session_ends_when_its_user_is_removed_or_changed() -> None:
    rita = Reviewer("rita", "reviewer")
    digest = hashlib.sha256(REVIEWER_KEY.encode()).digest()
    store = MemorySessions()

    def access(*keyed: Keyed) -> AdminAccess:
        return AdminAccess(Directory(keyed, 3600), lambda: store)

    token = await access(Keyed(rita, digest)).open(rita, digest.hex())
    request = browser(token)
    assert await access(Keyed(rita, digest)).admits(request) == rita
    assert await access().admits(request) is None  # removed
    demoted = Reviewer("rita", "viewer")
    assert await access(Keyed(demoted, digest)).admits(request) is None  # changed role
    scoped = Reviewer("rita", "reviewer", ("bank",))
    assert await access(Keyed(scoped, digest)).admits(request) is None  # changed tenants
    other_key = hashlib.sha256(b"another key").digest()
    assert await access(Keyed(rita, other_key)).admits(request) is None  # changed key


def browser(token: str) -> Request:
    cookie = f"{COOKIE}={token}".encode()
    return Request({"type": "http", "method": "GET", "headers": [(b"cookie", cookie)]})


def test_the_admin_keys_are_admins_named_admin() -> None:
    one = AdminSettings(keys=(ADMIN_KEY,)).named_users()
    assert [(u.name, u.role) for u in one] == [("admin", "admin")]
    two = AdminSettings(keys=(ADMIN_KEY, "second-admin-key-for-tests")).named_users()
    assert [u.name for u in two] == ["admin-1", "admin-2"]


@pytest.mark.parametrize(
    ("users", "error"),
    [
        ([{"name": "x", "key": "change-me", "role": "viewer"}], "placeholder"),
        ([{"name": "x", "key": "sha256:abc", "role": "viewer"}], "64 lowercase hex"),
        ([{"name": "x", "key": VIEWER_KEY, "role": "owner"}], "viewer"),
        ([{"name": "admin", "key": VIEWER_KEY, "role": "viewer"}], "each name once"),
        ([*USERS[:1], {**USERS[1], "key": VIEWER_KEY}], "a key of their own"),
    ],
)
def test_users_are_checked_like_keys(users: list[dict[str, Any]], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        AdminSettings.model_validate({"keys": [ADMIN_KEY], "users": users})


def test_a_user_key_that_is_a_tenant_key_is_refused_at_start(
    start_proxy: ProxyFactory,
) -> None:
    user = {"name": "x", "key": TENANT_KEY, "role": "viewer"}
    with pytest.raises(ConfigError, match="also an admin key"):
        start_proxy(config_extra={"admin": {"users": [user]}})


def test_an_admin_is_never_narrowed_to_some_tenants() -> None:
    """The playground, policy views and access log are the whole deployment's."""
    from guardproxy.config import AdminUser

    with pytest.raises(ValueError, match="an admin sees every tenant"):
        AdminUser(name="ann", key="3f9c2e1b7a6d4c08b5e2f1a9d7c3b6e4", role="admin", tenants=("a",))
