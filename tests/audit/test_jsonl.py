"""The JSONL audit sink writes every queued record, in order, before it closes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


@pytest.mark.anyio
async def test_a_lone_surrogate_is_replaced_and_costs_no_other_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lost: list[tuple[str, int]] = []
    sink = JsonlAuditSink(path, dropped=lambda reason, n: lost.append((reason, n)))
    sink.write({"request_id": "before"})
    sink.write({"request_id": "bad", "model": "\ud800", "content": {"prompt": "hi \udfff"}})
    sink.write({"request_id": "after", "model": "m"})
    await sink.aclose()
    records = [json.loads(line) for line in path.read_bytes().decode("utf-8").splitlines()]
    assert [r["request_id"] for r in records] == ["before", "bad", "after"]
    assert (records[1]["model"], records[1]["content"]["prompt"]) == ("\ufffd", "hi \ufffd")
    assert lost == []


@pytest.mark.anyio
async def test_a_record_with_no_json_form_is_dropped_alone_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.jsonl"
    lost: list[tuple[str, int]] = []
    sink = JsonlAuditSink(path, dropped=lambda reason, n: lost.append((reason, n)))
    sink.write({"request_id": "before"})
    cyclic: dict[str, Any] = {"request_id": "bad", "content": {"prompt": "secret"}}
    cyclic["loop"] = cyclic  # json.dumps: "Circular reference detected"
    sink.write(cyclic)
    sink.write({"request_id": "after"})
    await sink.aclose()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == ["before", "after"]
    assert lost == [("invalid", 1)]
    assert "'bad'" in caplog.text
    assert "secret" not in caplog.text


@pytest.mark.anyio
async def test_a_batch_the_file_refuses_is_counted(tmp_path: Path) -> None:
    lost: list[tuple[str, int]] = []
    sink = JsonlAuditSink(
        tmp_path / "audit.jsonl", dropped=lambda reason, n: lost.append((reason, n))
    )
    sink._file.close()  # any OSError or closed stream: the batch is lost, loudly
    sink.write({"request_id": "a"})
    sink.write({"request_id": "b"})
    await sink.aclose()
    assert lost == [("error", 2)]
