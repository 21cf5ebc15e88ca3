"""Labelling decisions and downloading the list, through the JSON API of a running proxy: who
may label which decision, the newest label as a filter, every label and export in the access
log, and exports that keep to the reviewer's role and tenants."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx

from tests.admin.conftest import (
    ADMIN_KEY,
    BANK_REVIEWER_KEY,
    REVIEWER_KEY,
    UNSAFE,
    VIEWER_KEY,
    Reviewed,
)


def call(reviewed: Reviewed, key: str, method: str, path: str, **options: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return httpx.request(method, f"{reviewed.proxy.url}{path}", headers=headers, **options)


def label(reviewed: Reviewed, key: str, request_id: str, **body: Any) -> httpx.Response:
    path = f"/admin/api/decisions/{request_id}/labels"
    return call(reviewed, key, "POST", path, json=body)


def listed(reviewed: Reviewed, key: str, **params: str) -> list[str]:
    found = call(reviewed, key, "GET", "/admin/api/decisions", params=params).json()
    return sorted(row["request_id"] for row in found["data"])


def access_events(reviewed: Reviewed, event: str) -> list[dict[str, Any]]:
    log = call(reviewed, ADMIN_KEY, "GET", "/admin/api/access").json()["data"]
    return [entry for entry in log if entry["event"] == event]


def test_a_reviewers_label_is_stored_filterable_and_logged(staffed: Reviewed) -> None:
    acme = staffed.blocked["acme"]
    first = label(staffed, REVIEWER_KEY, acme, label="correct")
    assert first.status_code == 201
    second = label(
        staffed, ADMIN_KEY, acme, label="false_positive", note="a film plot",
        categories=["Violence"],
    )  # fmt: skip
    assert second.json()["reviewer"] == "admin"
    assert listed(staffed, VIEWER_KEY, label="false_positive") == [acme]
    assert listed(staffed, VIEWER_KEY, label="correct") == []  # the newest label counts
    assert len(listed(staffed, VIEWER_KEY, label="unlabelled")) == 3
    one = call(staffed, REVIEWER_KEY, "GET", f"/admin/api/decisions/{acme}").json()
    assert [(x["reviewer"], x["label"]) for x in one["labels"]] == [
        ("admin", "false_positive"),
        ("rita", "correct"),
    ]
    assert one["labels"][0]["categories"] == ["Violence"]
    logged = [(e["actor"], e["request_id"], e["detail"]) for e in access_events(staffed, "label")]
    assert logged == [
        ("admin", acme, {"label": "false_positive"}),
        ("rita", acme, {"label": "correct"}),
    ]


def test_a_viewer_cannot_label(staffed: Reviewed) -> None:
    refused = label(staffed, VIEWER_KEY, staffed.blocked["acme"], label="correct")
    assert refused.status_code == 403
    assert access_events(staffed, "label") == []


def test_a_tenant_scoped_reviewer_labels_only_their_tenants(staffed: Reviewed) -> None:
    assert (
        label(staffed, BANK_REVIEWER_KEY, staffed.blocked["acme"], label="escalate").status_code
        == 404
    )
    assert (
        label(staffed, BANK_REVIEWER_KEY, staffed.blocked["bank"], label="escalate").status_code
        == 201
    )
    assert listed(staffed, ADMIN_KEY, label="escalate") == [staffed.blocked["bank"]]


def test_a_label_outside_the_four_is_refused(staffed: Reviewed) -> None:
    acme = staffed.blocked["acme"]
    assert label(staffed, REVIEWER_KEY, acme, label="wrong").status_code == 400
    assert label(staffed, REVIEWER_KEY, acme, label="correct", categories=5).status_code == 400
    assert label(staffed, REVIEWER_KEY, "no-such-id", label="correct").status_code == 404
    assert call(staffed, VIEWER_KEY, "GET", "/admin/api/decisions?label=wrong").status_code == 400


def test_a_viewers_export_holds_no_content_and_a_reviewers_does(staffed: Reviewed) -> None:
    viewer = call(staffed, VIEWER_KEY, "GET", "/admin/api/decisions.csv")
    assert viewer.status_code == 200
    assert viewer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(viewer.text)))
    assert len(rows) == 4
    assert "prompt" not in rows[0]
    assert UNSAFE not in viewer.text
    reviewer = call(staffed, REVIEWER_KEY, "GET", "/admin/api/decisions.csv?action=block")
    blocked = list(csv.DictReader(io.StringIO(reviewer.text)))
    # acme keeps content (audit_content: redacted); bank keeps none
    assert {(row["tenant"], row["prompt"]) for row in blocked} == {("acme", UNSAFE), ("bank", "")}
    lines = call(staffed, VIEWER_KEY, "GET", "/admin/api/decisions", params={"format": "ndjson"})
    records = [json.loads(line) for line in lines.text.splitlines()]
    assert len(records) == 4
    assert all(r["content"] is None and not r["input"].get("reasoning") for r in records)
    assert UNSAFE not in lines.text
    exports = access_events(staffed, "export")
    assert [(e["actor"], e["detail"]["format"], e["detail"]["content"]) for e in exports] == [
        ("vera", "ndjson", False),
        ("rita", "csv", True),
        ("vera", "csv", False),
    ]
    assert exports[1]["detail"]["filter"] == {"action": "block"}


def test_a_tenant_scoped_reviewers_export_holds_only_their_tenants(staffed: Reviewed) -> None:
    for path in ("/admin/api/decisions.ndjson", "/admin/api/decisions.ndjson?tenant=acme"):
        lines = call(staffed, BANK_REVIEWER_KEY, "GET", path).text.splitlines()
        assert {json.loads(line)["tenant"] for line in lines} <= {"bank"}
    everything = call(staffed, BANK_REVIEWER_KEY, "GET", "/admin/api/decisions.ndjson")
    assert len(everything.text.splitlines()) == 2


def test_a_viewer_reads_a_decisions_labels_without_their_notes(staffed: Reviewed) -> None:
    """A note is free text that may quote the prompt or answer: content, which a viewer
    never reads, by the API or on the page."""
    acme = staffed.blocked["acme"]
    note = "the user asked how to build a bomb"
    assert label(staffed, REVIEWER_KEY, acme, label="correct", note=note).status_code == 201
    seen = call(staffed, VIEWER_KEY, "GET", f"/admin/api/decisions/{acme}").json()
    assert [(x["label"], x["note"]) for x in seen["labels"]] == [("correct", None)]
    page = call(staffed, VIEWER_KEY, "GET", f"/admin/decisions/{acme}")
    assert page.status_code == 200
    assert note not in page.text
    reviewer = call(staffed, REVIEWER_KEY, "GET", f"/admin/api/decisions/{acme}").json()
    assert reviewer["labels"][0]["note"] == note
