"""The JSONL audit sink writes every queued record, in order, before it closes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardproxy.audit.sinks import JsonlAuditSink


@pytest.mark.anyio
async def test_every_record_is_written_by_close(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    sink = JsonlAuditSink(path)
    for i in range(500):
        sink.write({"request_id": str(i), "action": "allow"})
    await sink.aclose()
    lines = path.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [str(i) for i in range(500)]


@pytest.mark.anyio
async def test_records_are_appended_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text('{"request_id": "old"}\n')
    sink = JsonlAuditSink(path)
    sink.write({"request_id": "new"})
    await sink.aclose()
    assert [json.loads(line)["request_id"] for line in path.read_text().splitlines()] == [
        "old",
        "new",
    ]
