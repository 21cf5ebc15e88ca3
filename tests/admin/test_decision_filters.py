"""The decisions list's filters for monitoring, shadow policies and labels, over a store
written by the real sink: a monitored decision's `would`, the two ways a shadow policy can
part from the live one, each decision's newest label, and an export's batches."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from guardproxy.audit.labels import Label, add_label, labelled_decisions
from guardproxy.audit.query import DecisionFilter, each_decision, list_decisions
from guardproxy.audit.store import DatabaseSink, open_engine
from tests.audit.test_postgres import URL as POSTGRES
from tests.audit.test_postgres import database
from tests.audit.test_store import flushed, record

pytestmark = pytest.mark.anyio
__all__ = ["database"]  # the fixture


def shadow(n: int, action: str) -> dict[str, Any]:
    """The record a shadow policy writes after the live one."""
    body = {"action": action, "policy": "next", "input": {"status": "safe"}}
    return {"kind": "shadow", "request_id": f"req{n:05d}", "tenant": "acme", "shadow": body}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The filters read JSON fields, which each dialect spells its own way: both are tried."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    if not POSTGRES:
        pytest.skip("GUARDPROXY_TEST_POSTGRES is not set")
    found: str = request.getfixturevalue("database")
    return found


@pytest.fixture
async def store(url: str) -> AsyncIterator[AsyncEngine]:
    """req00000..req00007: a pass and a block of each kind, shadowed where it parts or agrees."""
    sink = await DatabaseSink.open(url)
    monitored: dict[str, Any] = {"action": "monitor"}
    made: list[dict[str, Any]] = [
        {"action": "allow"},  # 0: shadow would block
        {"action": "block", "categories": ("Violence",)},  # 1: shadow would allow
        {**monitored, "would_block": False, "would": {"input": "allow"}},  # 2: would block
        {**monitored, "would_block": True, "would": {"input": "block"}},  # 3: would allow
        {"action": "flag"},  # 4: agrees (flag)
        {"action": "reject", "status": 400},  # 5: no verdict; shadow blocks
        {"action": "fail", "status": 503},  # 6: fails closed; no shadow
        {"action": "allow"},  # 7: no shadow
    ]
    for n, fields in enumerate(made):
        sink.write(record(n, **fields))
    await flushed(sink)
    for n, action in [(0, "block"), (1, "allow"), (2, "block"), (3, "redact"), (4, "flag")]:
        sink.write(shadow(n, action))
    sink.write(shadow(5, "block"))
    await sink.aclose()
    engine = open_engine(url)
    yield engine
    await engine.dispose()


async def ids(engine: AsyncEngine, **where: Any) -> list[str]:
    page = await list_decisions(engine, DecisionFilter(**where))
    return sorted(row["request_id"] for row in page.rows)


async def test_the_action_filter_knows_monitor_fail_and_reject(store: AsyncEngine) -> None:
    assert await ids(store, action="monitor") == ["req00002", "req00003"]
    assert await ids(store, action="fail") == ["req00006"]
    assert await ids(store, action="reject") == ["req00005"]


async def test_a_monitored_row_carries_what_it_would_have_done(store: AsyncEngine) -> None:
    rows = {r["request_id"]: r for r in (await list_decisions(store, DecisionFilter())).rows}
    assert (rows["req00003"]["would_block"], rows["req00003"]["would"]) == (
        True,
        {"input": "block"},
    )
    assert rows["req00002"]["would_block"] is False
    assert rows["req00000"]["would_block"] is None
    assert rows["req00000"]["shadow_action"] == "block"
    assert rows["req00007"]["shadow_action"] is None


async def test_the_shadow_filter_finds_each_way_the_policies_part(store: AsyncEngine) -> None:
    # Live allowed (allow, flag, a monitored pass), shadow would block (block, fail); the
    # reject is no verdict of either, so it parts from nothing.
    assert await ids(store, shadow="would_block") == ["req00000", "req00002"]
    # Live blocked (or a monitored tenant would have), shadow lets it pass (a redaction passes).
    assert await ids(store, shadow="would_allow") == ["req00001", "req00003"]
    total = await list_decisions(store, DecisionFilter(shadow="would_block", action="monitor"))
    assert total.total == 1


async def test_the_newest_label_is_the_decisions_label(store: AsyncEngine) -> None:
    await add_label(store, Label("req00001", "rita", "correct"))
    await add_label(store, Label("req00001", "ben", "false_positive", "a game", ()))
    await add_label(store, Label("req00004", "rita", "false_negative", None, ("Violence",)))
    assert await ids(store, label="false_positive") == ["req00001"]
    assert await ids(store, label="correct") == []  # overruled by the newer label
    assert await ids(store, label="labelled") == ["req00001", "req00004"]
    assert len(await ids(store, label="unlabelled")) == 6
    page = await list_decisions(store, DecisionFilter(label="false_negative"))
    assert page.total == 1
    assert page.rows[0]["label"] == "false_negative"
    found = await labelled_decisions(store, "acme")
    assert [(f.record["request_id"], f.label.reviewer) for f in found] == [
        ("req00001", "ben"),
        ("req00004", "rita"),
    ]


async def test_an_export_reads_every_row_once_in_batches(store: AsyncEngine) -> None:
    batches = [batch async for batch in each_decision(store, DecisionFilter(), batch=3)]
    assert [len(b) for b in batches] == [3, 3, 2]
    seen = [row["request_id"] for batch in batches for row in batch]
    assert sorted(seen) == [f"req{n:05d}" for n in range(8)]
    assert len(set(seen)) == 8
