"""The hourly rollups: always equal to a GROUP BY over the decisions the table holds, after
batches, the row-by-row retry, the migration's backfill and retention; and the reviewer's
counts and charts read from them agree with counting the decisions."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from guardproxy.audit.query import (
    DecisionFilter,
    _tallied_blocks,
    blocks_per_category,
    list_decisions,
    traffic_per_tenant,
)
from guardproxy.audit.store import migrate, open_engine
from tests.audit.test_store import NOW, flushed, open_sink, record, upgrade_to

HOUR = timedelta(hours=1)
# The truth the rollups must equal, counted from the decisions by SQLite itself.
HOURLY_TRUTH = """
SELECT substr(time, 1, 13), coalesce(tenant, ''), action, count(*),
       round(sum(coalesce(input_ms, 0) + coalesce(output_ms, 0)), 3),
       round(sum(coalesce(total_ms, 0)), 3)
FROM decisions GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""
HOURLY_ROLLED = """
SELECT substr(hour, 1, 13), tenant, action, requests, round(guard_ms, 3), round(total_ms, 3)
FROM rollup_hourly ORDER BY 1, 2, 3
"""
CATEGORY_TRUTH = """
SELECT substr(d.time, 1, 13), coalesce(d.tenant, ''), c.direction, c.category, count(*)
FROM decisions d JOIN decision_categories c ON c.request_id = d.request_id
WHERE d.action = 'block' GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""
CATEGORY_ROLLED = """
SELECT substr(hour, 1, 13), tenant, direction, category, blocks
FROM rollup_categories ORDER BY 1, 2, 3, 4
"""


def mixed(start: int, count: int) -> list[dict[str, Any]]:
    """Decisions over three tenants (one with none), four actions, two directions, six hours."""
    made = []
    for n in range(start, start + count):
        blocked = n % 3 == 0
        made.append(
            record(
                n,
                tenant=("acme", "bank", "")[n % 3 if n % 7 else 1],
                action=("block" if blocked else ("allow", "flag", "error")[n % 3]),
                categories=("Violence", "Hate")[: 1 + n % 2] if blocked else ("Hate",) * (n % 2),
                direction=("input", "output")[n % 2],
                when=NOW - HOUR * (n % 6) + timedelta(minutes=n % 60),
                total_ms=float(n % 50) + 0.25,
            )
        )
    for row in made:  # "" stands for a decision with no tenant
        row["tenant"] = row["tenant"] or None
    return made


async def assert_rollups_match(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        for truth, rolled in ((HOURLY_TRUTH, HOURLY_ROLLED), (CATEGORY_TRUTH, CATEGORY_ROLLED)):
            expected = (await connection.execute(text(truth))).all()
            assert expected, "the check needs rows to compare"
            assert (await connection.execute(text(rolled))).all() == expected


@pytest.mark.anyio
async def test_rollups_equal_a_group_by_after_batches_and_the_row_by_row_retry(
    tmp_path: Path,
) -> None:
    lost: list[tuple[str, int]] = []
    sink = await open_sink(tmp_path, dropped=lambda reason, n: lost.append((reason, n)))
    for row in mixed(0, 700):  # more than one batch
        sink.write(row)
    await flushed(sink)
    for row in [*mixed(700, 40), record(5, action="block", categories=("Hate",))]:
        sink.write(row)  # req00005 again: the batch fails and is retried row by row
    sink.write(record(900, time="not a time", action="block", categories=("Hate",)))
    await flushed(sink)
    assert lost == [("error", 1), ("invalid", 1)]
    await assert_rollups_match(sink.engine)
    await sink.aclose()


@pytest.mark.anyio
async def test_the_migration_counts_the_decisions_stored_before_it(tmp_path: Path) -> None:
    sink = await open_sink(tmp_path)  # written by today's writer, then copied into ...
    for row in mixed(0, 300):
        sink.write(row)
    await sink.aclose()
    engine = open_engine(f"sqlite:///{tmp_path / 'older.db'}")
    async with engine.begin() as connection:  # ... a trail as revision 0004 left it
        await connection.run_sync(upgrade_to, "0004")
        await connection.execute(text(f"ATTACH '{tmp_path / 'audit.db'}' AS today"))
        for table in ("decisions", "decision_categories"):  # the columns 0004 had
            names = ", ".join(c["name"] for c in await columns_of(connection, table))
            await connection.execute(
                text(f"INSERT INTO {table} ({names}) SELECT {names} FROM today.{table}")
            )
    async with engine.begin() as connection:
        await connection.execute(text("DETACH today"))
    await migrate(engine)
    await assert_rollups_match(engine)
    await engine.dispose()


@pytest.mark.anyio
async def test_retention_prunes_whole_hours_of_decisions_and_rollups_alike(
    tmp_path: Path,
) -> None:
    sink = await open_sink(tmp_path, retention_days=1)
    for row in mixed(0, 120):
        sink.write(row)
    await flushed(sink)
    # A cutoff inside an hour: that hour stays whole, in the table and in the rollups.
    removed = await sink.prune(now=NOW + timedelta(days=1) - HOUR * 3 + timedelta(minutes=30))
    assert removed > 0
    await assert_rollups_match(sink.engine)
    hours = "SELECT DISTINCT substr(hour, 1, 13) FROM rollup_hourly ORDER BY 1"
    async with sink.engine.connect() as connection:
        kept = (await connection.execute(text(hours))).scalars().all()
    assert kept == [f"2026-12-02 {hour:02d}" for hour in (9, 10, 11, 12)]
    await sink.aclose()


@pytest.mark.anyio
async def test_counts_and_charts_from_the_rollups_agree_with_counting_decisions(
    tmp_path: Path,
) -> None:
    sink = await open_sink(tmp_path)
    for row in mixed(0, 500):
        sink.write(row)
    await flushed(sink)
    start = NOW - HOUR * 23
    for where in (
        DecisionFilter(),
        DecisionFilter(tenant="acme"),
        DecisionFilter(action="block", since=NOW - HOUR * 2),
        DecisionFilter(tenant="bank", category="Hate", direction="output"),
    ):
        rolled = await blocks_per_category(sink.engine, where, start, HOUR, 24)
        tallied = await _tallied_blocks(
            sink.engine, replace(where, action="block", since=start), HOUR, 24
        )  # fmt: skip
        assert rolled == tallied
        counted = await list_decisions(sink.engine, replace(where, guard="nemotron"))
        assert (await list_decisions(sink.engine, where)).total == counted.total
    traffic = await traffic_per_tenant(sink.engine, start, 24, DecisionFilter())
    assert sorted(traffic) == ["", "acme", "bank"]
    # A tenant-scoped reviewer's counts, chart and traffic come from its tenants alone.
    scoped = DecisionFilter(scope=("acme",))
    counted = await list_decisions(sink.engine, replace(scoped, guard="nemotron"))
    assert (await list_decisions(sink.engine, scoped)).total == counted.total < 500
    assert list(await traffic_per_tenant(sink.engine, start, 24, scoped)) == ["acme"]
    assert sum(sum(t.requests) for t in traffic.values()) == 500
    assert sum(sum(t.blocks) for t in traffic.values()) == 167  # n % 3 == 0 of 0..499
    await sink.aclose()


async def columns_of(connection: Any, table: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await connection.run_sync(
        lambda sync: inspect(sync).get_columns(table)
    )
    return found
