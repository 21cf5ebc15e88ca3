"""The reviewer's questions of the audit database: filtered, paged decisions; one decision;
blocks per category over time. Every filter maps onto an index in schema.py."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from guardproxy.audit.schema import decision_categories, decisions

PAGE_SIZE = 50
DIRECTIONS = ("input", "output")


@dataclass(frozen=True)
class DecisionFilter:
    """What the decisions list is narrowed to; None (or "") means any."""

    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    direction: str | None = None  # the direction judged unsafe
    category: str | None = None
    guard: str | None = None
    api: str | None = None
    # The tenants the reviewer may see (admin/reviewers.py), whatever else is asked: None is all.
    scope: tuple[str, ...] | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        for column in ("tenant", "action", "guard", "api"):
            if value := getattr(self, column):
                query = query.where(decisions.c[column] == value)
        if self.scope is not None:
            query = query.where(decisions.c.tenant.in_(self.scope))
        if self.since is not None:
            query = query.where(decisions.c.time >= self.since)
        if self.until is not None:
            query = query.where(decisions.c.time < self.until)
        if self.category:
            named = select(decision_categories.c.request_id).where(
                decision_categories.c.category == self.category
            )
            if self.direction in DIRECTIONS:
                named = named.where(decision_categories.c.direction == self.direction)
            query = query.where(decisions.c.request_id.in_(named))
        elif self.direction in DIRECTIONS:
            query = query.where(decisions.c[f"{self.direction}_status"] == "unsafe")
        return query

    def params(self) -> dict[str, str]:
        """The filter as query-string parameters (for paging links)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scope"}
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items() if v}


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    number: int
    total: int
    size: int = PAGE_SIZE

    @property
    def pages(self) -> int:
        return max((self.total + self.size - 1) // self.size, 1)


async def list_decisions(
    engine: AsyncEngine, where: DecisionFilter, page: int = 1, size: int = PAGE_SIZE
) -> Page:
    page = max(page, 1)
    columns = [c for c in decisions.c if c.name not in ("record", "content", "shadow")]
    query = where.apply(select(*columns)).order_by(decisions.c.time.desc(), decisions.c.id.desc())
    count = where.apply(select(func.count()).select_from(decisions))
    async with engine.connect() as connection:
        total = (await connection.execute(count)).scalar_one()
        result = await connection.execute(query.limit(size).offset((page - 1) * size))
        rows = [dict(row._mapping) for row in result]
        await _attach_categories(connection, rows)
    return Page(rows, page, total, size)


async def _attach_categories(connection: Any, rows: list[dict[str, Any]]) -> None:
    ids = [row["request_id"] for row in rows]
    query = select(decision_categories).where(decision_categories.c.request_id.in_(ids))
    named: dict[str, list[str]] = {}
    for found in await connection.execute(query):
        named.setdefault(found.request_id, []).append(f"{found.direction}: {found.category}")
    for row in rows:
        row["categories"] = sorted(named.get(row["request_id"], ()))


async def get_decision(engine: AsyncEngine, request_id: str) -> dict[str, Any] | None:
    query = select(decisions).where(decisions.c.request_id == request_id)
    async with engine.connect() as connection:
        row = (await connection.execute(query)).first()
    return None if row is None else dict(row._mapping)


async def facets(engine: AsyncEngine) -> dict[str, list[str]]:
    """The values each filter can take, for the filter form's choices."""
    queries = {
        "tenant": select(decisions.c.tenant).distinct(),
        "guard": select(decisions.c.guard).distinct(),
        "api": select(decisions.c.api).distinct(),
        "category": select(decision_categories.c.category).distinct(),
    }
    found: dict[str, list[str]] = {}
    async with engine.connect() as connection:
        for name, query in queries.items():
            values = (await connection.execute(query)).scalars()
            found[name] = sorted(v for v in values if v)
    return found


@dataclass(frozen=True)
class BlockSeries:
    """Blocks per category in equal time buckets, oldest first."""

    start: datetime
    bucket: timedelta
    counts: dict[str, list[int]]

    @property
    def buckets(self) -> int:
        return len(next(iter(self.counts.values()), []))


async def blocks_per_category(
    engine: AsyncEngine, where: DecisionFilter, start: datetime, bucket: timedelta, buckets: int
) -> BlockSeries:
    """Counted in Python from (time, category) pairs: one query that SQLite and PostgreSQL
    answer alike, without either's date functions."""
    blocked = DecisionFilter(**{**where.__dict__, "action": "block", "since": start})
    query = blocked.apply(
        select(decisions.c.time, decision_categories.c.category).join(
            decision_categories, decision_categories.c.request_id == decisions.c.request_id
        )
    )
    tally: Counter[tuple[str, int]] = Counter()
    async with engine.connect() as connection:
        for time, category in await connection.execute(query):
            index = int((_aware(time, start) - start) / bucket)
            if 0 <= index < buckets:
                tally[category, index] += 1
    counts: dict[str, list[int]] = {}
    for (category, index), n in sorted(tally.items()):
        counts.setdefault(category, [0] * buckets)[index] = n
    return BlockSeries(start, bucket, counts)


def _aware(time: datetime, like: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL, aware ones."""
    return time.replace(tzinfo=like.tzinfo) if time.tzinfo is None else time
