"""The JSON-lines trail rotates and follows rotation: logrotate's rename (the file at the path
is reopened), `copytruncate`, SIGHUP's reopen, and its own size and daily rotation with
retention, also with two processes writing one trail. No record is lost or written twice."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from guardproxy.audit.sinks import JsonlAuditSink, Rotation

pytestmark = pytest.mark.anyio


def ids(path: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in path.read_text().splitlines()]


def rotated(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.*"))


async def write(sink: JsonlAuditSink, *names: str) -> None:
    for name in names:
        sink.write({"request_id": name, "action": "allow"})
    await sink.flush()


async def test_after_logrotates_rename_the_trail_goes_to_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    await write(sink, "a")
    path.rename(tmp_path / "audit.jsonl.1")  # logrotate's default `create` mode
    await write(sink, "b")
    await sink.aclose()
    assert (ids(tmp_path / "audit.jsonl.1"), ids(path)) == (["a"], ["b"])


async def test_sighup_reopens_the_trail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    await write(sink, "a")
    os.replace(path, tmp_path / "kept.jsonl")
    path.touch()  # another tool put a new file in its place first
    sink.reopen()  # what SIGHUP does
    await write(sink, "b")
    await sink.aclose()
    assert (ids(tmp_path / "kept.jsonl"), ids(path)) == (["a"], ["b"])


async def test_copytruncate_needs_nothing_from_the_proxy(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path)
    await write(sink, "a")
    path.write_bytes(b"")  # logrotate's `copytruncate`, after its copy
    await write(sink, "b")
    await sink.aclose()
    assert ids(path) == ["b"]  # appends go to the start again: no hole of NUL bytes


async def test_the_trail_rotates_by_size_and_keeps_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotation=Rotation(max_bytes=100, keep=2))
    names = [f"r{n:02d}" for n in range(12)]
    for name in names:
        await write(sink, name)
    await sink.aclose()
    files = [*rotated(path), path]
    assert len(files) == 3  # two rotated, kept; the older ones deleted
    kept = [name for file in files for name in ids(file)]
    assert kept == names[-len(kept) :]  # the newest records, in order, none twice
    assert all(file.stat().st_size <= 100 for file in files)


async def test_the_trail_rotates_at_its_first_write_of_a_new_day(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlAuditSink(path, rotation=Rotation(daily=True))
    await write(sink, "yesterday")
    a_day_ago = time.time() - 86_400
    os.utime(path, (a_day_ago, a_day_ago))
    await write(sink, "today")
    await sink.aclose()
    [old] = rotated(path)
    assert (ids(old), ids(path)) == (["yesterday"], ["today"])


async def test_two_workers_rotating_one_trail_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    rotation = Rotation(max_bytes=150, keep=100)
    first, second = JsonlAuditSink(path, rotation=rotation), JsonlAuditSink(path, rotation=rotation)
    for n in range(20):
        await write(first if n % 2 else second, f"r{n:02d}")
    await first.aclose()
    await second.aclose()
    written = sorted(name for file in [*rotated(path), path] for name in ids(file))
    assert written == [f"r{n:02d}" for n in range(20)]
