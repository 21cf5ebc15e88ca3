"""The filtered decisions list as a download: CSV (one flat row per decision) or NDJSON (the
whole audit record per line, with its content, shadow decision and label), streamed in
batches from the audit database. What a viewer may not read is left out as everywhere else
(`Reviewer.shown`); a tenant-scoped reviewer's export holds only their tenants."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from guardproxy.admin.reviewers import Reviewer
from guardproxy.audit.query import DecisionFilter, each_decision

CSV_COLUMNS = (
    "request_id", "time", "tenant", "api", "guard", "model", "stream", "action", "status",
    "input_status", "output_status", "categories", "would_block", "would", "shadow_action",
    "label", "input_ms", "output_ms", "upstream_ms", "total_ms",
)  # fmt: skip
CONTENT_COLUMNS = ("prompt", "response")  # for reviewers and admins only
# A cell a spreadsheet would run as a formula (OWASP's CSV injection advice): quoted as text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "ndjson": "application/x-ndjson"}

Lines = Callable[[AsyncEngine, DecisionFilter, Reviewer], AsyncIterator[bytes]]


async def ndjson_lines(
    engine: AsyncEngine, where: DecisionFilter, reviewer: Reviewer
) -> AsyncIterator[bytes]:
    async for rows in each_decision(engine, where):
        for row in rows:
            yield (json.dumps(reviewer.shown(_document(row)), default=str) + "\n").encode()


def _document(row: dict[str, Any]) -> dict[str, Any]:
    fields = ("content", "shadow", "label")
    return {**row["record"], **{name: row[name] for name in fields}}


async def csv_lines(
    engine: AsyncEngine, where: DecisionFilter, reviewer: Reviewer
) -> AsyncIterator[bytes]:
    columns = CSV_COLUMNS + (CONTENT_COLUMNS if reviewer.may("reviewer") else ())
    yield _csv_line(columns)
    async for rows in each_decision(engine, where):
        for row in rows:
            flat = _flat(row)
            yield _csv_line(tuple(flat.get(name) for name in columns))


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    content = row.get("content") or {}
    return {
        **{name: row.get(name) for name in CSV_COLUMNS},
        "time": row["time"].isoformat(),
        "categories": "; ".join(row["categories"]),
        "would": json.dumps(row["would"]) if row.get("would") else None,
        "prompt": content.get("prompt"),
        "response": content.get("response"),
    }


def _csv_line(values: tuple[Any, ...]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([_cell(value) for value in values])
    return buffer.getvalue().encode()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


FORMATS: dict[str, Lines] = {"csv": csv_lines, "ndjson": ndjson_lines}
