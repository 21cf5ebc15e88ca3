"""Hourly counts beside the decisions (`rollup_hourly`, `rollup_categories`), kept by the
writer in the transaction that inserts the decisions, so the reviewer page reads a few hundred
rows instead of tallying a day of decisions.

Each batch adds its own tally with one upsert per table (`INSERT .. ON CONFLICT DO UPDATE`,
SQLite and PostgreSQL alike). Rows are sent in key order, so two writers adding to the same
hours lock them in the same order on PostgreSQL and never deadlock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from guardproxy.audit.schema import rollup_categories, rollup_hourly

BLOCK = "block"
Insert = Callable[[Table], Any]
# The dialects whose INSERT has `on_conflict_do_update` (the audit store supports these two).
UPSERTS: dict[str, Insert] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def hour_of(moment: datetime) -> datetime:
    """The UTC hour `moment` falls in (a naive time is UTC already, as SQLite returns it)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def hourly_rows(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (hour, tenant, action) of `decisions` (rows as `store.decision_row` makes)."""
    tally: dict[tuple[datetime, str, str], dict[str, Any]] = {}
    for row in decisions:
        key = (hour_of(row["time"]), row["tenant"] or "", row["action"])
        found = tally.setdefault(key, _hourly(key))
        found["requests"] += 1
        found["guard_ms"] += (row["input_ms"] or 0.0) + (row["output_ms"] or 0.0)
        found["total_ms"] += row["total_ms"] or 0.0
    return [tally[key] for key in sorted(tally)]


def _hourly(key: tuple[datetime, str, str]) -> dict[str, Any]:
    hour, tenant, action = key
    return {"hour": hour, "tenant": tenant, "action": action, "requests": 0, "guard_ms": 0.0,
            "total_ms": 0.0}  # fmt: skip


def category_rows(
    decisions: list[dict[str, Any]], categories: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Blocks per (hour, tenant, direction, category) among `decisions`."""
    blocked = {r["request_id"]: r for r in decisions if r["action"] == BLOCK}
    tally: dict[tuple[datetime, str, str, str], int] = {}
    for named in categories:
        row = blocked.get(named["request_id"])
        if row is not None:
            key = (hour_of(row["time"]), row["tenant"] or "", named["direction"], named["category"])
            tally[key] = tally.get(key, 0) + 1
    return [
        {"hour": h, "tenant": t, "direction": d, "category": c, "blocks": tally[h, t, d, c]}
        for h, t, d, c in sorted(tally)
    ]


async def add(
    connection: AsyncConnection,
    decisions: list[dict[str, Any]],
    categories: list[dict[str, str]],
) -> None:
    """Add these decisions to the rollups, in the caller's transaction."""
    dialect = connection.dialect.name
    hourly = hourly_rows(decisions)
    if hourly:
        statement = _upsert(dialect, rollup_hourly, ("requests", "guard_ms", "total_ms"))
        await connection.execute(statement, hourly)
    blocks = category_rows(decisions, categories)
    if blocks:
        await connection.execute(_upsert(dialect, rollup_categories, ("blocks",)), blocks)


def _upsert(dialect: str, table: Table, summed: tuple[str, ...]) -> Any:
    statement = UPSERTS[dialect](table)
    keys = [column.name for column in table.primary_key]
    added = {name: table.c[name] + statement.excluded[name] for name in summed}
    return statement.on_conflict_do_update(index_elements=keys, set_=added)


async def prune(connection: AsyncConnection, before: datetime) -> None:
    """Forget the hours before `before` (an hour boundary, so no hour is half counted)."""
    for table in (rollup_hourly, rollup_categories):
        await connection.execute(delete(table).where(table.c.hour < before))
