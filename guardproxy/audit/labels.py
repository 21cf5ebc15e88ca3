"""Reviewers' labels on decisions: `correct`, `false_positive`, `false_negative` or `escalate`,
with a note and the categories the reviewer believes apply.

A decision may be labelled several times (a second opinion, a change of mind); every label is
kept with who and when, and the newest (the highest id: ids only grow) is the decision's label.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from guardproxy.audit.schema import LABELS, decision_labels, decisions

MAX_NOTE = 4000
MAX_CATEGORIES = 64


class LabelRefused(ValueError):
    """A label that is not one of `LABELS`, or a note or category list past its bound."""


@dataclass(frozen=True, slots=True)
class Label:
    request_id: str
    reviewer: str
    label: str
    note: str | None = None
    categories: tuple[str, ...] = ()
    time: datetime | None = None  # set when stored

    @classmethod
    def of(cls, request_id: str, reviewer: str, label: str, note: Any, categories: Any) -> Label:
        """A label as a reviewer sent it (form or JSON), checked."""
        if label not in LABELS:
            raise LabelRefused(f"label must be one of {', '.join(LABELS)}")
        if note is not None and (not isinstance(note, str) or len(note) > MAX_NOTE):
            raise LabelRefused(f"note must be text of at most {MAX_NOTE} characters")
        named = _categories(categories)
        return cls(request_id, reviewer, label, note or None, named)

    def view(self) -> dict[str, Any]:
        shown = {**asdict(self), "categories": list(self.categories)}
        return shown | {"time": self.time.isoformat() if self.time else None}


def _categories(value: Any) -> tuple[str, ...]:
    """A list of names, or one comma-separated string (a form's text field)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list) or len(value) > MAX_CATEGORIES:
        raise LabelRefused(f"categories must be a list of at most {MAX_CATEGORIES} names")
    if not all(isinstance(name, str) for name in value):
        raise LabelRefused("categories must be names")
    return tuple(dict.fromkeys(name.strip()[:128] for name in value if name.strip()))


async def add_label(engine: AsyncEngine, label: Label) -> Label:
    stored = Label(**{**asdict(label), "time": datetime.now(UTC)})
    row = {**asdict(stored), "categories": list(stored.categories)}
    async with engine.begin() as connection:
        await connection.execute(insert(decision_labels), [row])
    return stored


async def labels_of(engine: AsyncEngine, request_id: str) -> list[Label]:
    """A decision's labels, newest first."""
    query = (
        select(decision_labels)
        .where(decision_labels.c.request_id == request_id)
        .order_by(decision_labels.c.id.desc())
    )
    async with engine.connect() as connection:
        return [_label(row) for row in await connection.execute(query)]


def _label(row: Any) -> Label:
    time = row.time if row.time.tzinfo else row.time.replace(tzinfo=UTC)  # SQLite: naive UTC
    named = tuple(row.categories or ())
    return Label(row.request_id, row.reviewer, row.label, row.note, named, time)


def newest() -> Select[Any]:
    """The id of each labelled decision's newest label."""
    return select(func.max(decision_labels.c.id)).group_by(decision_labels.c.request_id)


def labelled_as(label: str) -> Select[Any]:
    """The request ids whose newest label is `label`."""
    table = decision_labels
    return select(table.c.request_id).where(table.c.id.in_(newest()), table.c.label == label)


def labelled() -> Select[Any]:
    return select(decision_labels.c.request_id)


async def newest_labels(connection: AsyncConnection, ids: Iterable[str]) -> dict[str, str]:
    """Each of these decisions' newest label, where it has one."""
    table = decision_labels
    query = select(table.c.request_id, table.c.label).where(
        table.c.id.in_(newest().where(table.c.request_id.in_(list(ids))))
    )
    return {request_id: label for request_id, label in await connection.execute(query)}


@dataclass(frozen=True)
class Labelled:
    """A labelled decision as export-labels reads it: its record, its stored content (None
    under `audit_content: none`) and its newest label."""

    record: dict[str, Any]
    content: dict[str, Any] | None
    label: Label


async def labelled_decisions(
    engine: AsyncEngine, tenant: str, since: datetime | None = None
) -> list[Labelled]:
    """The tenant's labelled decisions made at or after `since`, oldest first, each with its
    newest label."""
    table = decision_labels
    query = (
        select(decisions.c.record, decisions.c.content, table)
        .join(table, table.c.request_id == decisions.c.request_id)
        .where(decisions.c.tenant == tenant, table.c.id.in_(newest()))
        .order_by(decisions.c.time, decisions.c.id)
    )
    if since is not None:
        query = query.where(decisions.c.time >= since)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return [Labelled(row.record, row.content, _label(row)) for row in rows]
