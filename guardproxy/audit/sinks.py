"""Where audit records go: a JSON-lines file written in batches off the event loop, memory
(tests), or several sinks at once."""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
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
MAX_REOPENS = 3  # a batch follows the file this many times before it just writes

Dropped = Callable[[str, int], None]  # (reason, records): counted by the metrics


class QueueObserver(Protocol):
    """Where a batching sink reports its queue and each batch's write time (the metrics)."""

    def queued(self, depth: int) -> None: ...

    def flushed(self, seconds: float) -> None: ...


class Unobserved:
    def queued(self, depth: int) -> None:
        return None

    def flushed(self, seconds: float) -> None:
        return None


class AuditSink(Protocol):
    def write(self, record: dict[str, Any]) -> None:
        """Queue one record; never blocks the event loop on I/O."""
        ...

    def reopen(self) -> None:
        """Reopen any file written to (SIGHUP after an outside rotation)."""
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

    def __init__(
        self,
        path: Path | None,
        *,
        dropped: Dropped | None = None,
        rotation: Rotation | None = None,
        observer: QueueObserver | None = None,
    ) -> None:
        self._path = path
        self._dropped = dropped or (lambda reason, n: None)
        self._observer: QueueObserver = observer or Unobserved()
        self._rotation = rotation if path is not None else None
        self._pending: list[bytes] = []
        self._file = self._open(path)
        self._flusher: asyncio.Task[None] | None = None
        self._reopen_asked = False

    def reopen(self) -> None:
        """Reopen the file before the next batch (SIGHUP, as logrotate's `postrotate` sends)."""
        self._reopen_asked = True

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
        self._observer.queued(len(self._pending))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def flush(self) -> None:
        """Write everything queued now."""
        if self._flusher is not None:
            await self._flusher
        await asyncio.to_thread(self._write_batch, self._take())

    async def aclose(self) -> None:
        await self.flush()
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
        self._observer.queued(0)
        return batch

    def _write_batch(self, lines: list[bytes]) -> None:
        if not lines:
            return
        started = time.perf_counter()
        try:
            self._append(b"".join(lines))
        except (OSError, ValueError):  # a full disk, a closed stream
            logger.exception("%d audit records could not be written", len(lines))
            self._dropped("error", len(lines))
        self._observer.flushed(time.perf_counter() - started)

    def _append(self, data: bytes) -> None:
        """Append under the file's lock. The file this process holds may have been moved
        away (logrotate's rename, another worker's rotation) or be due to rotate: then it
        is reopened, and the batch goes to the file now at the path."""
        path = self._path
        if path is None:
            self._file.write(data)
            self._file.flush()
            return
        for _ in range(MAX_REOPENS):
            if self._reopen_asked or _moved(self._file, path):
                self._reopen(path)
            file = self._file
            with _exclusive(file):
                if not _moved(file, path):
                    if self._rotation is None or not self._rotation.due(file, len(data)):
                        file.write(data)
                        file.flush()
                        return
                    self._rotation.rotate(path)  # under the lock: one worker rotates
        self._reopen(path)  # moved under us again and again: write where the path is now
        self._file.write(data)
        self._file.flush()

    def _reopen(self, path: Path) -> None:
        self._reopen_asked = False
        old, self._file = self._file, self._open(path)
        old.close()


@dataclass(frozen=True)
class Rotation:
    """When the trail is rotated (past `max_bytes`, or at its first write of a new UTC day)
    and how many rotated files are kept. A rotated file is renamed `<name>.<UTC time>`."""

    max_bytes: int | None = None
    daily: bool = False
    keep: int = 7

    def due(self, file: BinaryIO, adding: int) -> bool:
        stat = os.fstat(file.fileno())
        if stat.st_size == 0:
            return False
        if self.max_bytes is not None and stat.st_size + adding > self.max_bytes:
            return True
        written = datetime.fromtimestamp(stat.st_mtime, UTC).date()
        return self.daily and written < datetime.now(UTC).date()

    def rotate(self, path: Path) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path.rename(path.with_name(f"{path.name}.{stamp}"))
        rotated = sorted(path.parent.glob(f"{glob.escape(path.name)}.*"))
        for old in rotated[: max(len(rotated) - self.keep, 0)]:
            old.unlink(missing_ok=True)


def _moved(file: BinaryIO, path: Path) -> bool:
    """Whether `path` no longer names the file held open (renamed away, or replaced)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return True
    held = os.fstat(file.fileno())
    return (at_path.st_ino, at_path.st_dev) != (held.st_ino, held.st_dev)


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

    def reopen(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class FanoutSink:
    """Every record to each of several sinks: the JSON-lines trail and the database."""

    def __init__(self, *sinks: AuditSink) -> None:
        self.sinks = sinks

    def reopen(self) -> None:
        for sink in self.sinks:
            sink.reopen()

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    async def aclose(self) -> None:
        for sink in self.sinks:
            await sink.aclose()
