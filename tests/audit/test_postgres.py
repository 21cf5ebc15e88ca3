"""The same store on PostgreSQL (asyncpg), for replicas that share one trail. `.ci/run` starts
Debian's postgresql and sets GUARDPROXY_TEST_POSTGRES; without it these are skipped."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from guardproxy.audit.query import DecisionFilter, blocks_per_category, list_decisions
from guardproxy.audit.store import DatabaseSink, migrate, open_engine
from tests.audit.test_store import NOW, record, upgrade_to

URL = os.environ.get("GUARDPROXY_TEST_POSTGRES", "")
pytestmark = pytest.mark.skipif(not URL, reason="GUARDPROXY_TEST_POSTGRES is not set")


@pytest.fixture
async def database() -> AsyncIterator[str]:
    """A fresh database per test, dropped afterwards."""
    name = f"audit_{uuid.uuid4().hex[:12]}"
    admin = open_engine(URL).execution_options(isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    base, _, _ = URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.mark.anyio
async def test_two_replicas_share_one_trail(database: str) -> None:
    first, second = await DatabaseSink.open(database), await DatabaseSink.open(database)
    for n in range(300):
        sink = first if n % 2 else second
        sink.write(record(n, action="block" if n % 3 == 0 else "allow", categories=("Hate",)))
    await first.aclose()
    await second.aclose()
    engine = open_engine(database)
    assert (await list_decisions(engine, DecisionFilter())).total == 300
    assert (await list_decisions(engine, DecisionFilter(action="block"))).total == 100
    series = await blocks_per_category(
        engine, DecisionFilter(), NOW - timedelta(hours=1), timedelta(hours=1), 2
    )
    assert series.counts == {"Hate": [0, 100]}
    await engine.dispose()


@pytest.mark.anyio
async def test_retention_on_postgresql(database: str) -> None:
    sink = await DatabaseSink.open(database, retention_days=1)
    sink.write(record(1, categories=("Hate",), when=NOW - timedelta(days=2)))
    sink.write(record(2, when=NOW))
    await sink._flush_soon()
    assert await sink.prune(now=NOW) == 1
    assert (await list_decisions(sink.engine, DecisionFilter())).total == 1
    await sink.aclose()


@pytest.mark.anyio
async def test_a_populated_trail_is_upgraded_to_bigint_ids_and_jsonb(database: str) -> None:
    """Revision 0004 on a database written at 0003: the rows keep their content, the id is
    8 bytes with its sequence, the documents are jsonb, and new rows go on being written."""
    engine = open_engine(database)
    async with engine.begin() as connection:
        await connection.run_sync(upgrade_to, "0003")
        for n in range(50):
            await connection.execute(
                text(
                    "INSERT INTO decisions (request_id, time, api, stream, action, input_status,"
                    " output_status, record, content) VALUES (:id, now(), 'chat.completions',"
                    " false, 'allow', 'safe', 'safe', :record, :content)"
                ),
                {"id": f"old{n}", "record": f'{{"n": {n}}}', "content": '{"prompt": "hi"}'},
            )
    await migrate(engine)
    async with engine.connect() as connection:
        types: dict[str, str] = dict(
            (
                await connection.execute(
                    text(
                        "SELECT column_name, data_type FROM information_schema.columns"
                        " WHERE table_name = 'decisions'"
                    )
                )
            ).all()
        )
        sequence = await connection.execute(
            text("SELECT data_type FROM information_schema.sequences"
                 " WHERE sequence_name = 'decisions_id_seq'")
        )  # fmt: skip
        sequence_type = sequence.scalar_one()
        kept = await connection.execute(
            text("SELECT count(*), max((record->>'n')::int) FROM decisions")
        )
        count, highest = kept.one()
    assert (types["id"], types["record"], types["content"], types["shadow"]) == (
        "bigint", "jsonb", "jsonb", "jsonb"
    )  # fmt: skip
    assert sequence_type == "bigint"
    assert (count, highest) == (50, 49)
    await engine.dispose()
    sink = await DatabaseSink.open(database)
    sink.write(record(1, categories=("Hate",)))
    await sink.aclose()
    engine = open_engine(database)
    assert (await list_decisions(engine, DecisionFilter())).total == 51
    await engine.dispose()
