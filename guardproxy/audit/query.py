"""The reviewer's questions of the audit database: filtered, paged decisions; one decision;
blocks per category and each tenant's traffic over time. Every filter maps onto an index in
schema.py; counts and charts read the hourly rollups (rollups.py) wherever the filter is one
they can answer (tenant, action, direction, category, whole hours), so a page view costs the
same over a million decisions as over a hundred."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Select,
    Table,
    and_,
    false,
    func,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from guardproxy.audit import labels
from guardproxy.audit.rollups import BLOCK, hour_of
from guardproxy.audit.schema import (
    LABELS,
    decision_categories,
    decisions,
    rollup_categories,
    rollup_hourly,
)

PAGE_SIZE = 50
HOUR = timedelta(hours=1)
DIRECTIONS = ("input", "output")
# Besides a label's name: any label, or none yet (a review queue).
LABEL_CHOICES = (*LABELS, "labelled", "unlabelled")
# A decision stops the content (block, or fail closed) or lets it through (allow, flag, a
# redaction, a monitored tenant's pass); a reject or an upstream error is neither verdict.
STOPS = ("block", "fail")
PASSES = ("allow", "flag", "redact")
# The shadow-disagreement filter: "would_block" is live allowed, shadow would block;
# "would_allow" the reverse.
SHADOW_CHOICES = ("would_block", "would_allow")


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
    label: str | None = None  # the newest label, or "labelled" / "unlabelled" (LABEL_CHOICES)
    shadow: str | None = None  # a disagreement with the shadow policy (SHADOW_CHOICES)
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
        if self.label in LABEL_CHOICES:
            query = query.where(_labelled(self.label))
        if self.shadow in SHADOW_CHOICES:
            query = query.where(_disagrees(self.shadow))
        return query

    def on_rollup(self, query: Select[Any], table: Table) -> Select[Any]:
        """The tenant asked for, and the reviewer's scope, on a rollup table's rows."""
        if self.tenant:
            query = query.where(table.c.tenant == self.tenant)
        if self.scope is not None:
            query = query.where(table.c.tenant.in_(self.scope))
        return query

    @property
    def in_whole_hours(self) -> bool:
        """Whether the hourly rollups hold the answer: no guard, API, label or shadow
        disagreement named, and a time range (if any) on hour boundaries."""
        bounds = (t for t in (self.since, self.until) if t is not None)
        narrowed = self.guard or self.api or self.label or self.shadow
        return not narrowed and all(t == hour_of(t) for t in bounds)

    def params(self) -> dict[str, str]:
        """The filter as query-string parameters (for paging links)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scope"}
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items() if v}


def _labelled(choice: str) -> ColumnElement[bool]:
    request_id = decisions.c.request_id
    if choice == "labelled":
        return request_id.in_(labels.labelled())
    if choice == "unlabelled":
        return request_id.not_in(labels.labelled())
    return request_id.in_(labels.labelled_as(choice))


def _disagrees(choice: str) -> ColumnElement[bool]:
    """Live and shadow parted: one let the content through where the other would stop it."""
    shadow = decisions.c.shadow_action
    if choice == "would_block":
        return and_(_live_passed(), shadow.in_(STOPS))
    return and_(_live_stopped(), shadow.in_(PASSES))


def _would_block(value: bool) -> ColumnElement[bool]:
    return decisions.c.would_block == (true() if value else false())


def _live_stopped() -> ColumnElement[bool]:
    """The live decision stopped the content (for a monitored tenant: would have)."""
    action = decisions.c.action
    return or_(action.in_(STOPS), and_(action == "monitor", _would_block(True)))


def _live_passed() -> ColumnElement[bool]:
    action = decisions.c.action
    return or_(action.in_(PASSES), and_(action == "monitor", _would_block(False)))


# What a list row shows besides the columns: a monitored decision's `would_block` and `would`,
# and the shadow policy's action (the documents themselves stay out of a page of rows).
LISTED_DOCUMENT_FIELDS = (decisions.c.record["would"].label("would"),)
KEYSET = (decisions.c.time, decisions.c.id)  # the list's order, newest first
LISTED = (
    *(c for c in decisions.c if c.name not in ("record", "content", "shadow")),
    *LISTED_DOCUMENT_FIELDS,
)


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
    query = where.apply(select(*LISTED)).order_by(decisions.c.time.desc(), decisions.c.id.desc())
    async with engine.connect() as connection:
        total = await count_decisions(connection, where)
        result = await connection.execute(query.limit(size).offset((page - 1) * size))
        rows = [dict(row._mapping) for row in result]
        await _attach(connection, rows)
    return Page(rows, page, total, size)


async def each_decision(
    engine: AsyncEngine, where: DecisionFilter, batch: int = 1000
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching decision, newest first, whole (record, content, shadow) and with its
    categories and label, a batch at a time: each batch is its own short query, resuming
    after the last row seen, so an export of millions holds neither memory nor a
    transaction open."""
    order = (column.desc() for column in KEYSET)
    query = where.apply(select(decisions, *LISTED_DOCUMENT_FIELDS)).order_by(*order).limit(batch)
    after: tuple[Any, Any] | None = None
    while True:
        page = query if after is None else query.where(tuple_(*KEYSET) < after)
        async with engine.connect() as connection:
            rows = [dict(row._mapping) for row in await connection.execute(page)]
            await _attach(connection, rows)
        if rows:
            yield rows
        if len(rows) < batch:
            return
        after = (rows[-1]["time"], rows[-1]["id"])


async def _attach(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Each row's categories and newest label (None: not labelled)."""
    await _attach_categories(connection, rows)
    found = await labels.newest_labels(connection, [row["request_id"] for row in rows])
    for row in rows:
        row["label"] = found.get(row["request_id"])


async def count_decisions(connection: AsyncConnection, where: DecisionFilter) -> int:
    """How many decisions match: summed from the rollups when they can say, else counted."""
    if not where.in_whole_hours or where.direction or where.category:
        count = where.apply(select(func.count()).select_from(decisions))
        return int((await connection.execute(count)).scalar_one())
    query = where.on_rollup(
        select(func.coalesce(func.sum(rollup_hourly.c.requests), 0)), rollup_hourly
    )
    if where.action:
        query = query.where(rollup_hourly.c.action == where.action)
    query = _hours(query, rollup_hourly.c.hour, where.since, where.until)
    return int((await connection.execute(query)).scalar_one())


def _hours(
    query: Select[Any], hour: Column[Any], since: datetime | None, until: datetime | None
) -> Select[Any]:
    if since is not None:
        query = query.where(hour >= since)
    if until is not None:
        query = query.where(hour < until)
    return query


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
    columns = {
        "tenant": decisions.c.tenant,
        "guard": decisions.c.guard,
        "api": decisions.c.api,
        "category": decision_categories.c.category,
    }
    async with engine.connect() as connection:
        return {name: await _distinct(connection, column) for name, column in columns.items()}


async def _distinct(connection: AsyncConnection, column: Column[Any]) -> list[str]:
    """A column's values, one index seek each (`min(c) WHERE c > last`): neither SQLite nor
    PostgreSQL skips through an index for DISTINCT, and a scan of a million rows costs
    hundreds of milliseconds where a few seeks cost one."""
    found: list[str] = []
    while True:
        query = select(func.min(column))
        if found:
            query = query.where(column > found[-1])
        value = (await connection.execute(query)).scalar_one()
        if value is None:
            return [v for v in found if v]
        found.append(value)


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
    """Blocks per category in `buckets` buckets from `start`: from the rollups for hourly
    buckets of a filter they answer, else tallied from the decisions."""
    blocked = DecisionFilter(**{**where.__dict__, "action": BLOCK, "since": start})
    if bucket == HOUR and blocked.in_whole_hours:
        return await _rolled_up_blocks(engine, blocked, buckets)
    return await _tallied_blocks(engine, blocked, bucket, buckets)


async def _rolled_up_blocks(engine: AsyncEngine, where: DecisionFilter, hours: int) -> BlockSeries:
    assert where.since is not None
    table = rollup_categories
    query = where.on_rollup(select(table.c.hour, table.c.category, func.sum(table.c.blocks)), table)
    for column, value in _named_by(where):
        query = query.where(table.c[column] == value)
    end = where.since + HOUR * hours
    until = end if where.until is None else min(where.until, end)
    query = _hours(query, table.c.hour, where.since, until).group_by(table.c.hour, table.c.category)
    async with engine.connect() as connection:
        found = [tuple(row) for row in await connection.execute(query)]
    return _series(where.since, HOUR, hours, found)


def _series(
    start: datetime, bucket: timedelta, buckets: int, found: list[tuple[Any, ...]]
) -> BlockSeries:
    tally: Counter[tuple[str, int]] = Counter()
    for time, category, n in found:
        index = int((_aware(time, start) - start) / bucket)
        if 0 <= index < buckets:
            tally[category, index] += int(n)
    counts: dict[str, list[int]] = {}
    for (category, index), n in sorted(tally.items()):
        counts.setdefault(category, [0] * buckets)[index] = n
    return BlockSeries(start, bucket, counts)


async def _tallied_blocks(
    engine: AsyncEngine, blocked: DecisionFilter, bucket: timedelta, buckets: int
) -> BlockSeries:
    """Counted in Python from (time, category) pairs: one query that SQLite and PostgreSQL
    answer alike, without either's date functions."""
    assert blocked.since is not None
    named = decision_categories
    query = blocked.apply(
        select(decisions.c.time, named.c.category).join(
            named, named.c.request_id == decisions.c.request_id
        )
    )
    for column, value in _named_by(blocked):
        query = query.where(named.c[column] == value)
    async with engine.connect() as connection:
        found = [(time, category, 1) for time, category in await connection.execute(query)]
    return _series(blocked.since, bucket, buckets, found)


def _named_by(where: DecisionFilter) -> list[tuple[str, str]]:
    """A category or direction filter charts only that category or direction."""
    named = [("category", where.category)] if where.category else []
    in_direction = where.direction in DIRECTIONS
    return named + ([("direction", str(where.direction))] if in_direction else [])


def _aware(time: datetime, like: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC); PostgreSQL, aware ones."""
    return time.replace(tzinfo=like.tzinfo) if time.tzinfo is None else time


@dataclass(frozen=True)
class TenantTraffic:
    """One tenant's hours, oldest first: decisions, blocks, and guard time summed."""

    requests: list[int]
    blocks: list[int]
    guard_ms: list[float]

    def block_rate(self, index: int | None = None) -> float | None:
        requests = sum(self.requests) if index is None else self.requests[index]
        blocks = sum(self.blocks) if index is None else self.blocks[index]
        return blocks / requests if requests else None

    def mean_guard_ms(self, index: int | None = None) -> float | None:
        requests = sum(self.requests) if index is None else self.requests[index]
        spent = sum(self.guard_ms) if index is None else self.guard_ms[index]
        return spent / requests if requests else None


async def traffic_per_tenant(
    engine: AsyncEngine, start: datetime, hours: int, where: DecisionFilter
) -> dict[str, TenantTraffic]:
    """Each tenant's hourly traffic from `start` (tenant "" is the decisions with none), for
    the tenant `where` names and within the reviewer's scope."""
    table = rollup_hourly
    columns = (table.c.hour, table.c.tenant, table.c.action, table.c.requests, table.c.guard_ms)
    query: Select[Any] = select(*columns)
    query = where.on_rollup(_hours(query, table.c.hour, start, start + HOUR * hours), table)
    found: dict[str, TenantTraffic] = {}
    async with engine.connect() as connection:
        for row in await connection.execute(query):
            hour, name, action, requests, guard_ms = tuple(row)
            index = int((_aware(hour, start) - start) / HOUR)
            shown = found.setdefault(name, TenantTraffic([0] * hours, [0] * hours, [0.0] * hours))
            shown.requests[index] += requests
            shown.blocks[index] += requests if action == BLOCK else 0
            shown.guard_ms[index] += guard_ms
    return dict(sorted(found.items()))
