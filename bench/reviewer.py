"""The reviewer page over a big audit database, and what it costs live traffic.

1. Builds an SQLite audit database of `--decisions` (1M) decisions over the last 24 hours
   (3 tenants, 24 categories, 10 % blocks) by bulk insert at revision 0004, then upgrades it
   to head: revision 0005 backfills the hourly rollups (timed).
2. Times page and API views on `guardproxy admin serve` (median of `--views`).
3. Measures the event loop's longest stall while this process runs one page view's queries
   through the async engine (aiosqlite's thread), as the in-proxy page runs them.
4. Live chat p50/p95 through `guardproxy serve` (instant fakes, checks on, writing to the same
   database) in interleaved rounds: quiet, with a client hammering the admin process, and
   with one hammering the proxy's own /admin page.
Run from the repository root: ``python -m bench.reviewer [--decisions 1000000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.common import HOST, Children, children, free_port
from bench.overhead import KEY, commands, run_batch
from bench.report import percentile
from guardproxy.audit.store import migrate, open_engine

ADMIN_KEY = "bench-admin-key"
TENANTS = ("acme", "bank", "shop")
CATEGORIES = tuple(f"S{n}: Category {n}" for n in range(1, 25))
INSERT_ROWS = 50_000
HAMMERS = 2  # reviewers loading pages back to back
VIEWS = {
    "page: all decisions": "/admin/",
    "page: one tenant's blocks": "/admin/?tenant=bank&action=block",
    "page: one category": "/admin/?category=S7%3A+Category+7",
    "api: all decisions": "/admin/api/decisions",
    "api: one tenant's blocks": "/admin/api/decisions?tenant=acme&action=block",
}
DECISION_SQL = (
    "INSERT INTO decisions (request_id, time, tenant, api, guard, model, stream, action, status,"
    " input_status, output_status, input_ms, output_ms, upstream_ms, total_ms, record)"
    " VALUES (?, ?, ?, 'chat.completions', 'nemotron', 'm', 0, ?, 200, ?, 'safe', ?, ?, 10.0,"
    " ?, '{}')"
)
CATEGORY_SQL = "INSERT INTO decision_categories VALUES (?, 'input', ?)"


def build(path: Path, decisions: int) -> dict[str, float]:
    """The database at head with `decisions` rows; seconds spent inserting and migrating."""
    url = f"sqlite:///{path}"
    asyncio.run(_at_revision(url, "0004"))
    started = time.perf_counter()
    with sqlite3.connect(path) as connection:
        for first in range(0, decisions, INSERT_ROWS):
            rows = [_decision(n) for n in range(first, min(first + INSERT_ROWS, decisions))]
            connection.executemany(DECISION_SQL, [row for row, _ in rows])
            named = [(row[0], category) for row, category in rows if category]
            connection.executemany(CATEGORY_SQL, named)
    inserted = time.perf_counter()
    asyncio.run(_at_revision(url, "head"))
    return {"insert_s": inserted - started, "migrate_s": time.perf_counter() - inserted}


def _decision(n: int) -> tuple[tuple[Any, ...], str | None]:
    rng = random.Random(n)
    when = datetime.now(UTC) - timedelta(seconds=rng.uniform(0, 86_000))
    blocked = rng.random() < 0.1
    category = rng.choice(CATEGORIES) if blocked else None
    row = (
        f"bench{n:08d}", when.strftime("%Y-%m-%d %H:%M:%S.%f"), rng.choice(TENANTS),
        "block" if blocked else "allow", "unsafe" if blocked else "safe",
        rng.uniform(5, 30), rng.uniform(5, 30), rng.uniform(20, 80),
    )  # fmt: skip
    return row, category


async def _at_revision(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    from guardproxy.audit.store import MIGRATIONS

    engine = open_engine(url)
    if revision == "head":
        await migrate(engine)
    else:

        def upgrade(connection: Any) -> None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        async with engine.begin() as connection:
            await connection.run_sync(upgrade)
    await engine.dispose()


async def loop_stall_during_a_page(path: Path) -> dict[str, float]:
    """The longest gap a 1 ms ticker sees while the page's queries run, and their time."""
    from guardproxy.audit.query import (
        DecisionFilter,
        blocks_per_category,
        facets,
        list_decisions,
        traffic_per_tenant,
    )

    engine = open_engine(f"sqlite:///{path}")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    worst, running = 0.0, True

    async def ticker() -> None:
        nonlocal worst
        while running:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - before - 0.001)

    task = asyncio.create_task(ticker())
    began = time.perf_counter()
    for _ in range(5):
        await list_decisions(engine, DecisionFilter())
        await blocks_per_category(engine, DecisionFilter(), start, timedelta(hours=1), 24)
        await traffic_per_tenant(engine, start, 24, DecisionFilter())
        await facets(engine)
    took = (time.perf_counter() - began) / 5
    running = False
    await task
    await engine.dispose()
    return {"loop_stall_max_ms": worst * 1000, "queries_ms": took * 1000}


def time_views(base: str, views: int) -> dict[str, float]:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    timings: dict[str, float] = {}
    with httpx.Client(base_url=base, headers=headers, timeout=60, trust_env=False) as client:
        for name, path in VIEWS.items():
            taken = []
            for _ in range(views + 1):  # the first warms the page cache, and is not counted
                started = time.perf_counter()
                client.get(path).raise_for_status()
                taken.append((time.perf_counter() - started) * 1000)
            timings[name] = statistics.median(taken[1:])
    return timings


async def hammer(base: str, stop: asyncio.Event) -> int:
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    loads = 0
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        while not stop.is_set():
            await client.get("/admin/")
            loads += 1
    return loads


async def live_chat(
    chat: str, hammered: dict[str, str | None], requests: int, rounds: int
) -> dict[str, Any]:
    """p50/p95 of chat at c=8 per condition (median over interleaved rounds), page loads."""
    found: dict[str, dict[str, list[float]]] = {n: {"p50": [], "p95": []} for n in hammered}
    loads: dict[str, int] = dict.fromkeys(hammered, 0)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(headers=headers, timeout=30, trust_env=False) as client:
        await run_batch(client, chat, 100, 8)  # warm-up
        for _ in range(rounds):
            for name in random.sample(list(hammered), k=len(hammered)):
                stop, target = asyncio.Event(), hammered[name]
                pages = [target] * HAMMERS if target else []
                hammers = [asyncio.create_task(hammer(page, stop)) for page in pages]
                batch = await run_batch(client, chat, requests, 8)
                stop.set()
                loads[name] += sum(await asyncio.gather(*hammers))
                found[name]["p50"].append(percentile(batch.latencies_ms, 50))
                found[name]["p95"].append(percentile(batch.latencies_ms, 95))
    return {
        name: {k: statistics.median(v) for k, v in found[name].items()} | {"loads": loads[name]}
        for name in hammered
    }


def start(group: Children, workdir: Path, database: Path) -> dict[str, str]:
    ports = {name: free_port() for name in ("upstream", "guard", "proxy-on", "admin")}
    argv = commands(workdir, {**ports, "floor": free_port(), "proxy-off": free_port()})
    config = json.loads((workdir / "proxy-on" / "guardproxy.yaml").read_text())
    config["audit"]["database"] = f"sqlite:///{database}"
    config["admin"] = {"keys": [ADMIN_KEY]}
    (workdir / "proxy-on" / "guardproxy.yaml").write_text(json.dumps(config))
    for name in ("upstream", "guard", "proxy-on"):
        args, ready = argv[name]
        group.launch(args, workdir / f"{name}.log", f"http://{HOST}:{ports[name]}{ready}")
    admin = [sys.executable, "-m", "guardproxy", "admin", "serve", "--config"]
    admin += [str(workdir / "proxy-on" / "guardproxy.yaml"), "--port", str(ports["admin"])]
    group.launch(admin, workdir / "admin.log", f"http://{HOST}:{ports['admin']}/healthz")
    return {name: f"http://{HOST}:{ports[name]}" for name in ("proxy-on", "admin")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=7)
    parser.add_argument("--requests", type=int, default=400, help="chat requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guardproxy-reviewer-") as folder:
        workdir, database = Path(folder), Path(folder) / "audit.db"
        report: dict[str, Any] = {"decisions": args.decisions, **build(database, args.decisions)}
        report |= asyncio.run(loop_stall_during_a_page(database))
        with children() as group:
            urls = start(group, workdir, database)
            report["views_ms"] = time_views(urls["admin"], args.views)
            report["in_proxy_views_ms"] = time_views(urls["proxy-on"], args.views)
            chat = f"{urls['proxy-on']}/v1/chat/completions"
            conditions = {"quiet": None, "admin process": urls["admin"]}
            conditions["in-proxy page"] = urls["proxy-on"]
            report["chat"] = asyncio.run(live_chat(chat, conditions, args.requests, args.rounds))
    report["wall_s"] = round(time.perf_counter() - began, 1)
    sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
