"""Where audit records go: a JSON-lines file written in batches off the event loop, memory
(tests), or several sinks at once."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TextIO

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.05


class AuditSink(Protocol):
    def write(self, record: dict[str, Any]) -> None:
        """Queue one record; never blocks the event loop on I/O."""
        ...

    async def aclose(self) -> None:
        """Write everything queued, then release the file."""
        ...


class JsonlAuditSink:
    """Appends records to a JSON-lines file (or stdout).

    Records are encoded on the event loop (a few microseconds each) and written by a worker
    thread in batches every FLUSH_INTERVAL_S, so a slow disk never stalls a request and the
    thread wakes 20 times a second rather than once per request. Every record queued before
    `aclose()` is written.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._pending: list[str] = []
        self._file = self._open(path)
        self._flusher: asyncio.Task[None] | None = None

    @staticmethod
    def _open(path: Path | None) -> TextIO:
        if path is None:
            return sys.stdout
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._pending.append(json.dumps(record, ensure_ascii=False, default=str) + "\n")
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
        while self._pending:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await asyncio.to_thread(self._write_batch, self._take())
        self._flusher = None

    def _take(self) -> list[str]:
        batch, self._pending = self._pending, []
        return batch

    def _write_batch(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            with _exclusive(self._file if self._path is not None else None):
                self._file.write("".join(lines))
                self._file.flush()
        except (OSError, ValueError):
            logger.exception("%d audit records could not be written", len(lines))


@contextmanager
def _exclusive(file: TextIO | None) -> Iterator[None]:
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
