"""The access log: who signed in (or failed to), whose content they read, what they labelled
and what they exported, with when, which decision and from which address.

Kept in the audit database's `access_log` table when there is one (shared by workers and
replicas), else in the process (the latest `MAX_MEMORY_EVENTS`). Writes are single small
inserts on the reviewer page's own path, never the proxy's.

Other code records an event in one line, from a route the admission wrapper has let in::

    await access.record(request, "label", request_id, {"label": "false_positive"})

which reads the reviewer from `request.state.reviewer` and the log from
`request.state.access_log` (both set by `admin/site.py`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from guardproxy.audit.schema import access_log

Event = Literal["sign_in", "sign_in_failed", "content_view", "label", "export"]
MAX_MEMORY_EVENTS = 10_000
PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class AccessEvent:
    time: datetime
    actor: str  # the reviewer's name; for a failed sign-in, what was offered as a name or "-"
    event: str
    request_id: str | None = None
    address: str | None = None
    detail: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        """As the JSON API and the export give it."""
        return {**asdict(self), "time": self.time.isoformat()}


@dataclass(frozen=True)
class AccessPage:
    events: list[AccessEvent]
    total: int


class AccessStore(Protocol):
    async def add(self, event: AccessEvent) -> None: ...

    async def page(self, actor: str | None, limit: int, offset: int) -> AccessPage: ...


class MemoryAccess:
    def __init__(self) -> None:
        self.events: deque[AccessEvent] = deque(maxlen=MAX_MEMORY_EVENTS)

    async def add(self, event: AccessEvent) -> None:
        self.events.append(event)

    async def page(self, actor: str | None, limit: int, offset: int) -> AccessPage:
        found = [e for e in reversed(self.events) if actor is None or e.actor == actor]
        return AccessPage(found[offset : offset + limit], len(found))


class DatabaseAccess:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, event: AccessEvent) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(insert(access_log), [asdict(event)])

    async def page(self, actor: str | None, limit: int, offset: int) -> AccessPage:
        rows = select(access_log).order_by(access_log.c.time.desc(), access_log.c.id.desc())
        count = select(func.count()).select_from(access_log)
        if actor is not None:
            rows, count = (
                rows.where(access_log.c.actor == actor),
                count.where(access_log.c.actor == actor),
            )
        async with self.engine.connect() as connection:
            total = (await connection.execute(count)).scalar_one()
            found = await connection.execute(rows.limit(limit).offset(offset))
            events = [_event(row) for row in found]
        return AccessPage(events, total)


def _event(row: Any) -> AccessEvent:
    time = row.time if row.time.tzinfo else row.time.replace(tzinfo=UTC)  # SQLite: naive UTC
    return AccessEvent(time, row.actor, row.event, row.request_id, row.address, row.detail)


class AccessLog:
    """The log the reviewer page writes to: the database's once the lifespan has opened it
    (`engine()` gives it), else the process's own."""

    def __init__(self, engine: Callable[[], AsyncEngine | None]) -> None:
        self.engine = engine
        self.memory = MemoryAccess()
        self._database: DatabaseAccess | None = None

    def store(self) -> AccessStore:
        engine = self.engine()
        if engine is None:
            return self.memory
        if self._database is None or self._database.engine is not engine:
            self._database = DatabaseAccess(engine)
        return self._database

    async def write(
        self,
        actor: str,
        event: Event,
        request_id: str | None = None,
        address: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        entry = AccessEvent(datetime.now(UTC), actor, event, request_id, address, detail)
        await self.store().add(entry)


async def record(
    request: Request,
    event: Event,
    request_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record that the reviewer of `request` did `event` (on decision `request_id`)."""
    log: AccessLog = request.state.access_log
    address = request.client.host if request.client else None
    await log.write(request.state.reviewer.name, event, request_id, address, detail)
