"""Where audit records go: a JSON-lines file written in batches off the event loop, memory
(tests), or several sinks at once."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Protocol

from guardproxy.audit.storable import json_line

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05

Dropped = Callable[[str, int], None]  # (reason, records): counted by the metrics


class AuditSink(Protocol):
    def write(self, record: dict[str, Any]) -> None:
        """Queue one record; never blocks the event loop on I/O."""
        ...

    async def aclose(self) -> None:
        """Write everything queued, then release the file."""
        ...


class JsonlAuditSink:
    """Appends records to a JSON-lines file (or stdout).

    Each record is encoded on its own on the event loop (a few microseconds) and written by a
    worker thread in batches every FLUSH_INTERVAL_S, so a slow disk never stalls a request and
    the thread wakes 20 times a second rather than once per request. A record with no JSON
    form is dropped alone; every other record queued before `aclose()` is written.
    """

    def __init__(self, path: Path | None, *, dropped: Dropped | None = None) -> None:
        self._path = path
        self._dropped = dropped or (lambda reason, n: None)
        self._pending: list[bytes] = []
        self._file = self._open(path)
        self._flusher: asyncio.Task[None] | None = None

    @staticmethod
    def _open(path: Path | None) -> BinaryIO:
        if path is None:
            return sys.stdout.buffer
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("ab")

    def write(self, record: dict[str, Any]) -> None:
        try:
            line = json_line(record)
        except (TypeError, ValueError):  # e.g. a key that is not a string, a cycle
            logger.exception("audit record %r not written (invalid)", record.get("request_id"))
            self._dropped("invalid", 1)
            return
        self._pending.append(line)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def aclose(self) -> None:
        if self._flusher is not None:
            await self._flusher
        self._write_batch(self._take())
        if self._path is not None:
            self._file.close()

    async def _flush_soon(self) -> None:
        # One flusher at a time, looping while records arrive: batches are written in order.
        try:
            while self._pending:
                await asyncio.sleep(FLUSH_INTERVAL_S)
                await asyncio.to_thread(self._write_batch, self._take())
        finally:
            self._flusher = None

    def _take(self) -> list[bytes]:
        batch, self._pending = self._pending, []
        return batch

    def _write_batch(self, lines: list[bytes]) -> None:
        if not lines:
            return
        try:
            with _exclusive(self._file if self._path is not None else None):
                self._file.write(b"".join(lines))
                self._file.flush()
        except (OSError, ValueError):  # a full disk, a closed stream
            logger.exception("%d audit records could not be written", len(lines))
            self._dropped("error", len(lines))


@contextmanager
def _exclusive(file: BinaryIO | None) -> Iterator[None]:
    """Hold an exclusive lock on the file while a batch is written: with `--workers N`, N
    processes append to one trail, and a batch larger than one write() must not interleave."""
    if file is None or fcntl is None:
        yield
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(file.fileno(), fcntl.LOCK_UN)


class MemoryAuditSink:
    """Keeps records in a list: for tests and for `guardproxy classify`."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    async def aclose(self) -> None:
        return None


class FanoutSink:
    """Every record to each of several sinks: the JSON-lines trail and the database."""

    def __init__(self, *sinks: AuditSink) -> None:
        self.sinks = sinks

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    async def aclose(self) -> None:
        for sink in self.sinks:
            await sink.aclose()
