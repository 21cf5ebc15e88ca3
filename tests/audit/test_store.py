"""The database sink: migrations, batching, nothing lost on close, a full database that never
blocks, retention, and the reviewer's queries (SQLite here; PostgreSQL in test_postgres.py)."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text

from guardproxy.audit.query import (
    DecisionFilter,
    blocks_per_category,
    facets,
    get_decision,
    list_decisions,
)
from guardproxy.audit.store import DatabaseSink, migrate, open_engine

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def record(
    n: int,
    *,
    tenant: str = "acme",
    action: str = "allow",
    categories: tuple[str, ...] = (),
    when: datetime = NOW,
    direction: str = "input",
    **extra: Any,
) -> dict[str, Any]:
    unsafe = {"status": "unsafe", "categories": list(categories), "latency_ms": 4.5}
    checks = {"input": {"status": "safe", "latency_ms": 3.0}, "output": {"status": "skipped"}}
    if categories:
        checks[direction] = unsafe
    return {
        "time": when.isoformat(timespec="milliseconds"),
        "request_id": f"req{n:05d}",
        "tenant": tenant,
        "api": "chat.completions",
        "guard": "nemotron",
        "model": "m",
        "stream": False,
        "action": action,
        "status": 200,
        **checks,
        "upstream_ms": 10.0,
        "total_ms": 20.0,
        **extra,
    }


async def open_sink(tmp_path: Path, **options: Any) -> DatabaseSink:
    return await DatabaseSink.open(f"sqlite:///{tmp_path / 'audit.db'}", **options)


@pytest.mark.anyio
async def test_every_record_queued_before_close_is_stored(tmp_path: Path) -> None:
    sink = await open_sink(tmp_path)
    for n in range(1200):  # more than one batch
        sink.write(record(n, categories=("Violence",) if n % 3 == 0 else ()))
    await sink.aclose()
    engine = open_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    page = await list_decisions(engine, DecisionFilter())
    assert page.total == 1200
    assert (await list_decisions(engine, DecisionFilter(category="Violence"))).total == 400
    await engine.dispose()


@pytest.mark.anyio
async def test_schema_is_at_alembic_head_in_wal_mode_with_the_reviewers_indexes(
    tmp_path: Path,
) -> None:
    sink = await open_sink(tmp_path)
    await migrate(sink.engine)  # a second run is a no-op
    async with sink.engine.connect() as connection:
        version = await connection.execute(text("SELECT version_num FROM alembic_version"))
        assert version.scalar_one() == "0005"
        mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
        indexes = await connection.run_sync(
            lambda sync: {i["name"] for i in inspect(sync).get_indexes("decisions")}
        )
    assert mode == "wal"
    assert {"ix_decisions_tenant_time", "ix_decisions_action_time", "ix_decisions_time"} <= indexes
    await sink.aclose()


@pytest.mark.anyio
async def test_a_full_database_loses_the_record_to_the_log_and_the_counter_never_the_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lost: list[tuple[str, int]] = []
    sink = await open_sink(tmp_path, dropped=lambda reason, n: lost.append((reason, n)))
    pages = 0

    def cap_pages(connection: sqlite3.Connection, _record: Any) -> None:
        connection.execute(f"PRAGMA max_page_count={pages}")  # SQLite's own "disk full"

    async with sink.engine.connect() as connection:
        pages = (await connection.execute(text("PRAGMA page_count"))).scalar_one()
    await sink.engine.dispose()  # new connections take the cap
    event.listen(sink.engine.sync_engine, "connect", cap_pages)
    with caplog.at_level(logging.ERROR, "guardproxy.audit.store"):
        sink.write(record(1, note="x" * 100_000))  # returns at once: nothing waits on the DB
        await sink.aclose()
    assert lost == [("error", 1)]
    assert any(
        "req00001" in r.getMessage() and "not stored" in r.getMessage() for r in caplog.records
    )


@pytest.mark.anyio
async def test_a_queue_past_its_bound_drops_and_counts_instead_of_growing(tmp_path: Path) -> None:
    lost: list[tuple[str, int]] = []
    sink = await open_sink(
        tmp_path, max_queue=2, dropped=lambda reason, n: lost.append((reason, n))
    )
    for n in range(5):
        sink.write(record(n))
    await sink.aclose()
    assert lost == [("queue_full", 1)] * 3


@pytest.mark.anyio
async def test_one_bad_record_does_not_cost_the_rest_of_its_batch(tmp_path: Path) -> None:
    lost: list[tuple[str, int]] = []
    sink = await open_sink(tmp_path, dropped=lambda reason, n: lost.append((reason, n)))
    for n in (1, 2, 2, 3):  # the second req00002 breaks the unique request id
        sink.write(record(n))
    await sink.aclose()
    engine = open_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    assert (await list_decisions(engine, DecisionFilter())).total == 3
    assert lost == [("error", 1)]
    await engine.dispose()


@pytest.mark.anyio
async def test_retention_removes_old_decisions_and_their_categories(tmp_path: Path) -> None:
    sink = await open_sink(tmp_path, retention_days=7)
    sink.write(record(1, categories=("Violence",), when=NOW - timedelta(days=8)))
    sink.write(record(2, categories=("Violence",), when=NOW - timedelta(days=6)))
    await sink._flush_soon()
    assert await sink.prune(now=NOW) == 1
    page = await list_decisions(sink.engine, DecisionFilter(category="Violence"))
    assert [row["request_id"] for row in page.rows] == ["req00002"]
    async with sink.engine.connect() as connection:
        left = await connection.execute(text("SELECT request_id FROM decision_categories"))
        assert left.scalars().all() == ["req00002"]
    await sink.aclose()


@pytest.mark.anyio
async def test_filters_and_paging_answer_the_reviewers_questions(tmp_path: Path) -> None:
    sink = await open_sink(tmp_path)
    for n in range(120):
        blocked = n % 4 == 0
        sink.write(
            record(
                n,
                tenant="bank" if n % 2 else "clinic",
                action="block" if blocked else "allow",
                categories=("Violence",) if blocked else (),
                direction="output" if n % 8 == 0 else "input",
                when=NOW - timedelta(minutes=n),
            )
        )
    await sink._flush_soon()
    engine = sink.engine
    clinic_blocks = DecisionFilter(tenant="clinic", action="block")
    assert (await list_decisions(engine, clinic_blocks)).total == 30
    assert (await list_decisions(engine, DecisionFilter(direction="output"))).total == 15
    both = DecisionFilter(category="Violence", direction="input")
    assert (await list_decisions(engine, both)).total == 15
    recent = DecisionFilter(since=NOW - timedelta(minutes=9, seconds=30))
    assert (await list_decisions(engine, recent)).total == 10
    second = await list_decisions(engine, DecisionFilter(), page=2, size=50)
    assert (second.pages, len(second.rows)) == (3, 50)
    assert second.rows[0]["request_id"] == "req00050"  # newest first
    found = await get_decision(engine, "req00008")
    assert found is not None
    assert found["record"]["output"]["categories"] == ["Violence"]
    assert (await facets(engine))["tenant"] == ["bank", "clinic"]
    series = await blocks_per_category(
        engine, DecisionFilter(), NOW - timedelta(hours=2), timedelta(hours=1), 3
    )
    assert series.counts == {"Violence": [14, 15, 1]}  # n = 64..116, 4..60, 0
    await sink.aclose()


@pytest.mark.anyio
async def test_a_trail_made_at_revision_0001_is_upgraded_in_place(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(upgrade_to, "0001")
        await connection.execute(
            text(
                "INSERT INTO decisions (request_id, time, api, stream, action, input_status,"
                " output_status, record) VALUES ('old', '2026-11-01 00:00:00', 'responses', 0,"
                " 'allow', 'safe', 'safe', '{}')"
            )
        )
    await migrate(engine)
    found = await get_decision(engine, "old")
    assert found is not None
    assert (found["api"], found["shadow"]) == ("responses", None)
    await engine.dispose()


def upgrade_to(connection: Any, revision: str) -> None:
    """The schema at an earlier Alembic revision, as an older release left it."""
    from alembic import command
    from alembic.config import Config

    from guardproxy.audit.store import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def flushed(sink: DatabaseSink) -> None:
    """Wait for the sink's own flusher to finish what is queued."""
    assert sink._flusher is not None
    await sink._flusher


@pytest.mark.anyio
async def test_a_lone_surrogate_is_stored_replaced_and_the_writer_goes_on(tmp_path: Path) -> None:
    lost: list[tuple[str, int]] = []
    sink = await open_sink(tmp_path, dropped=lambda reason, n: lost.append((reason, n)))
    content = {"mode": "full", "prompt": "hi \ud800", "response": "nul\x00"}
    sink.write(record(1))
    sink.write(record(2, model="m\udfff", categories=("Vio\ud800lence",), content=content))
    await flushed(sink)
    sink.write(record(3))  # after the bad record's batch, a new flusher takes this one
    await flushed(sink)
    bad = await get_decision(sink.engine, "req00002")
    assert bad is not None
    assert (bad["model"], bad["record"]["model"]) == ("m\ufffd", "m\ufffd")
    assert bad["content"] == {"mode": "full", "prompt": "hi \ufffd", "response": "nul\ufffd"}
    assert (await facets(sink.engine))["category"] == ["Vio\ufffdlence"]
    assert (await list_decisions(sink.engine, DecisionFilter())).total == 3
    assert lost == []
    await sink.aclose()


@pytest.mark.anyio
async def test_a_record_that_makes_no_row_is_dropped_alone_and_later_ones_are_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lost: list[tuple[str, int]] = []
    sink = await open_sink(tmp_path, dropped=lambda reason, n: lost.append((reason, n)))
    with caplog.at_level(logging.ERROR, "guardproxy.audit.store"):
        sink.write(record(1))
        sink.write(record(2, time="not a time", content={"prompt": "private words"}))
        sink.write(record(3))
        await flushed(sink)
        sink.write(record(4))
        await sink.aclose()
    engine = open_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    page = await list_decisions(engine, DecisionFilter())
    assert sorted(row["request_id"] for row in page.rows) == ["req00001", "req00003", "req00004"]
    assert lost == [("invalid", 1)]
    assert "req00002" in caplog.text
    assert "private words" not in caplog.text
    await engine.dispose()


@pytest.mark.anyio
async def test_the_migrations_build_exactly_the_tables_the_code_declares(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from guardproxy.audit.schema import metadata

    sink = await open_sink(tmp_path)
    async with sink.engine.connect() as connection:
        differences = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
        )
    assert differences == []
    await sink.aclose()
