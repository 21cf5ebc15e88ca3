"""The database sink: audit records batched into SQLite or PostgreSQL through SQLAlchemy.

`write()` only queues (the event loop never waits on the database); one flusher task inserts
what is queued every FLUSH_INTERVAL_S in one transaction, through a driver that works off the
loop (aiosqlite's thread, asyncpg's protocol). A database that fails (full disk, gone server)
or a queue past its bound never holds up a request: the record is logged, counted, and the
request goes on; the JSON-lines trail still has it. A failed batch is retried row by row, so one
bad record is dropped alone and the writer goes on with the next. `aclose()` writes everything
queued. The hourly rollups (rollups.py) are added to in the same transaction as the decisions,
and pruned with them, so they always count exactly the rows the table holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, delete, event, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from guardproxy.audit import rollups
from guardproxy.audit.schema import decision_categories, decisions
from guardproxy.audit.sinks import Dropped, QueueObserver, Unobserved
from guardproxy.audit.storable import storable

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05
BATCH_ROWS = 500
RETENTION_EVERY_S = 3600.0
MIGRATIONS = Path(__file__).parent / "migrations"
# A URL without a driver gets the asyncio one; the proxy never opens a blocking connection.
ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",  # readers (the reviewer page) never block the writer
    "PRAGMA synchronous=NORMAL",  # durable at each checkpoint; WAL keeps it consistent
    "PRAGMA busy_timeout=5000",  # several workers share one file
    "PRAGMA foreign_keys=ON",
)

# What a record can raise on its way to a row besides the database's own errors: a missing
# request id, a time that is no ISO 8601, text the driver cannot encode.
RECORD_ERRORS = (AttributeError, KeyError, TypeError, ValueError)


def async_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return f"{ASYNC_DRIVERS.get(scheme, scheme)}{sep}{rest}"


def open_engine(url: str) -> AsyncEngine:
    # Error messages then name no bound values: the `content` column holds prompts.
    engine = create_async_engine(async_url(url), hide_parameters=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to Alembic's head (a no-op when it is there)."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class DatabaseSink:
    """Queues records and inserts them in batches; see the module docstring."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_queue: int = 10_000,
        retention_days: float | None = None,
        dropped: Dropped | None = None,
        observer: QueueObserver | None = None,
    ) -> None:
        self.engine = engine
        self._max_queue = max_queue
        self._retention = timedelta(days=retention_days) if retention_days else None
        self._dropped = dropped or (lambda reason, n: None)
        self._observer: QueueObserver = observer or Unobserved()
        self._pending: list[dict[str, Any]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        max_queue: int = 10_000,
        retention_days: float | None = None,
        dropped: Dropped | None = None,
        observer: QueueObserver | None = None,
    ) -> DatabaseSink:
        engine = open_engine(url)
        await migrate(engine)
        sink = cls(
            engine,
            max_queue=max_queue,
            retention_days=retention_days,
            dropped=dropped,
            observer=observer,
        )
        if sink._retention is not None:
            sink._pruner = asyncio.create_task(sink._prune_every(RETENTION_EVERY_S))
        return sink

    def reopen(self) -> None:
        return None  # a database has no file to follow

    def write(self, record: dict[str, Any]) -> None:
        if len(self._pending) >= self._max_queue:
            self._lose([record], "queue_full")
            return
        self._pending.append(record)
        self._observer.queued(len(self._pending))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def aclose(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pruner
        if self._flusher is not None:
            await self._flusher
        while self._pending:
            await self._insert(self._take())
        await self.engine.dispose()

    async def prune(self, now: datetime | None = None) -> int:
        """Delete decisions older than `retention_days` (whole hours, as the rollups count
        them) and their rollups; returns how many decisions went."""
        if self._retention is None:
            return 0
        cutoff = rollups.hour_of((now or datetime.now(UTC)) - self._retention)
        old = select(decisions.c.request_id).where(decisions.c.time < cutoff)
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(decision_categories).where(decision_categories.c.request_id.in_(old))
            )
            result = await connection.execute(delete(decisions).where(decisions.c.time < cutoff))
            await rollups.prune(connection, cutoff)
        return result.rowcount

    async def _prune_every(self, interval_s: float) -> None:
        while True:
            try:
                removed = await self.prune()
            except SQLAlchemyError:
                logger.exception("the audit retention sweep failed")
            else:
                if removed:
                    logger.info("audit retention removed %d decisions", removed)
            await asyncio.sleep(interval_s)

    async def _flush_soon(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(FLUSH_INTERVAL_S)
                await self._insert(self._take())
        finally:  # whatever happened, the next write starts a flusher again
            self._flusher = None

    def _take(self) -> list[dict[str, Any]]:
        batch, self._pending = self._pending[:BATCH_ROWS], self._pending[BATCH_ROWS:]
        self._observer.queued(len(self._pending))
        return batch

    async def _insert(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        started = time.perf_counter()
        try:
            await self._insert_batch(records)
            self._observer.flushed(time.perf_counter() - started)
        except (SQLAlchemyError, *RECORD_ERRORS) as exc:
            if len(records) == 1:
                logger.exception("an audit record could not be stored")
                self._lose(records, "error" if isinstance(exc, SQLAlchemyError) else "invalid")
                return
            for record in records:  # one bad row must not cost the rest of the batch
                await self._insert([record])

    async def _insert_batch(self, records: list[dict[str, Any]]) -> None:
        records = [storable(record) for record in records]
        live = [r for r in records if r.get("kind") != "shadow"]
        rows = [decision_row(record) for record in live]
        categories = [c for record in live for c in category_rows(record)]
        async with self.engine.begin() as connection:
            if rows:
                await connection.execute(insert(decisions), rows)
            if categories:
                await connection.execute(insert(decision_categories), categories)
            await rollups.add(connection, rows, categories)
            for shadow in (r for r in records if r.get("kind") == "shadow"):
                # Queued after its live record, so that row exists by now.
                match = decisions.c.request_id == shadow["request_id"]
                await connection.execute(
                    update(decisions)
                    .where(match)
                    .values(shadow=shadow["shadow"], shadow_action=_action_of(shadow["shadow"]))
                )

    def _lose(self, records: list[dict[str, Any]], reason: str) -> None:
        for record in records:  # the trail's content stays out of the log
            kept = {k: v for k, v in record.items() if k != "content"}
            logger.error("audit record not stored (%s): %s", reason, json.dumps(kept, default=str))
        self._dropped(reason, len(records))


def decision_row(record: dict[str, Any]) -> dict[str, Any]:
    checks = {d: record.get(d) or {} for d in ("input", "output")}
    return {
        "request_id": record["request_id"],
        "time": datetime.fromisoformat(record["time"]),
        "tenant": record.get("tenant"),
        "api": record.get("api", "chat.completions"),
        "guard": record.get("guard"),
        "model": _clip(record.get("model"), 256),
        "stream": bool(record.get("stream")),
        "action": record.get("action", "allow"),
        "status": record.get("status"),
        "input_status": checks["input"].get("status", "skipped"),
        "output_status": checks["output"].get("status", "skipped"),
        "input_ms": checks["input"].get("latency_ms"),
        "output_ms": checks["output"].get("latency_ms"),
        "upstream_ms": record.get("upstream_ms"),
        "total_ms": record.get("total_ms"),
        "record": {k: v for k, v in record.items() if k != "content"},
        "content": record.get("content"),
        "would_block": record.get("would_block") if record.get("action") == "monitor" else None,
    }


def _action_of(shadow: Any) -> str | None:
    action = shadow.get("action") if isinstance(shadow, dict) else None
    return str(action)[:16] if action is not None else None


def category_rows(record: dict[str, Any]) -> list[dict[str, str]]:
    checks = {d: record.get(d) or {} for d in ("input", "output")}
    return [
        {"request_id": record["request_id"], "direction": direction, "category": str(name)[:128]}
        for direction, check in checks.items()
        for name in dict.fromkeys(check.get("categories") or ())
    ]


def _clip(value: Any, size: int) -> str | None:
    return None if value is None else str(value)[:size]
