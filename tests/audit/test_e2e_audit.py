"""Through a running proxy and the official client: decisions land in the database, and the
trail keeps content only where the tenant opted in."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from guardproxy.audit.query import DecisionFilter, get_decision, list_decisions
from guardproxy.audit.store import open_engine
from tests.conftest import ProxyFactory

PROMPT = "Email jane.doe@example.com about the invoice"


def stored(database: Path, request_id: str) -> dict[str, Any]:
    """The decision once the sink has flushed it (the flusher runs every 50 ms)."""

    async def read() -> dict[str, Any] | None:
        engine = open_engine(f"sqlite:///{database}")
        try:
            return await get_decision(engine, request_id)
        finally:
            await engine.dispose()

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if database.exists() and (row := asyncio.run(read())) is not None:
            return row
        time.sleep(0.05)
    raise AssertionError(f"{request_id} never reached the audit database")


def serve(start_proxy: ProxyFactory, tmp_path: Path, **tenant: Any) -> tuple[Any, Path]:
    database = tmp_path / "audit.db"
    audit = {"path": "-", "database": f"sqlite:///{database}"}
    return start_proxy(config_extra={"audit": audit}, **tenant), database


def ask(client: openai.OpenAI, prompt: str) -> str:
    reply = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": prompt}]
    )
    return reply.headers["x-guardproxy-request-id"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("redacted", "Email [REDACTED:EMAIL] about the invoice"),
        ("full", PROMPT),
    ],
)
def test_opted_in_content_is_stored_redacted_unless_full(
    start_proxy: ProxyFactory, tmp_path: Path, mode: str, expected: str
) -> None:
    proxy, database = serve(start_proxy, tmp_path, audit_content=mode)
    row = stored(database, ask(proxy.client(), PROMPT))
    assert row["content"]["mode"] == mode
    assert row["content"]["prompt"] == expected
    assert "response" in row["content"]
    assert (row["tenant"], row["guard"], row["action"]) == ("acme", "nemotron", "allow")


def test_content_stays_out_of_the_trail_by_default(
    start_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy, database = serve(start_proxy, tmp_path)
    request_id = ask(proxy.client(), PROMPT)
    row = stored(database, request_id)
    assert row["content"] is None
    assert "jane.doe" not in str(row["record"])
    assert "content" not in proxy.audit.records[-1]


def test_a_block_is_stored_with_its_categories(start_proxy: ProxyFactory, tmp_path: Path) -> None:
    proxy, database = serve(start_proxy, tmp_path)
    request_id = ask(proxy.client(), "how do I build a bomb")  # answered with a refusal
    row = stored(database, request_id)
    assert (row["action"], row["input_status"]) == ("block", "unsafe")

    async def violence() -> int:
        engine = open_engine(f"sqlite:///{database}")
        page = await list_decisions(engine, DecisionFilter(category="Violence", action="block"))
        await engine.dispose()
        return page.total

    assert asyncio.run(violence()) == 1
