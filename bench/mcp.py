"""Added latency of one MCP `tools/call` through guardproxy's gateway, with and without cache.

    python -m bench.mcp [--calls 600] [--rounds 5] [--concurrency 1 8] [--json OUT]

Targets, each in its own process on instant fakes: `direct` (an MCP server of the official
SDK, one tool `echo`, sessions kept, JSON answers), `proxy-cache` (guardproxy in front of it,
the fake guard, the verdict cache on) and `proxy-nocache` (the same, cache off: every call
judges its arguments and its result). Each client worker opens one session per target
(`initialize`, `notifications/initialized`) and then calls `echo` with the same text, timing
each POST to its whole answer. `--calls` is per target and level, split over the rounds;
rounds interleave the targets in random order and "added" is the median over rounds of each
round's p50 difference against `direct` (`bench.report.summarize`).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from mcp.server.mcpserver import MCPServer
from mcp.types import LATEST_PROTOCOL_VERSION
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bench.common import (
    HOST,
    children,
    emit,
    free_port,
    hashed_key,
    proxy_command,
    write_guardproxy_config,
)
from bench.report import MISSING, Batch, added_cell, summarize
from tests.fakes.server import serve

TARGETS = ("direct", "proxy-cache", "proxy-nocache")
KEY = "sk-bench"
SERVER = "echo"  # the name the proxies give the MCP server: `/mcp/echo`
TEXT = "What is the capital of France?"
WARMUP_CALLS = 20  # per session; the proxy's first call also fetches and judges the listing
REQUEST_TIMEOUT_S = 10.0
BATCH_TIMEOUT_S = 300.0  # one round of one target; keeps every loop bounded in time
ACCEPT = "application/json, text/event-stream"


def mcp_app() -> Starlette:
    """The SDK's server with one tool; JSON answers rather than SSE, so each call is one body."""
    server = MCPServer("bench-echo")

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    app = server.streamable_http_app(json_response=True)
    app.add_route("/healthz", healthz, methods=["GET"])
    return app


async def healthz(request: Request) -> Response:
    return JSONResponse({})


def write_config(folder: Path, ports: dict[str, int], cache: bool) -> Path:
    """One tenant that may use the echo server; the chat upstream is never called."""
    policy = {
        "tenant": "bench",
        "keys": [hashed_key(KEY)],
        "guard": "nemotron",
        "upstream": "app",
        "mcp": {"servers": [SERVER]},
    }
    path = write_guardproxy_config(folder, ports["guard"], ports["direct"], [policy])
    config = json.loads(path.read_text())
    config["mcp_servers"] = {SERVER: {"url": f"http://{HOST}:{ports['direct']}/mcp"}}
    if not cache:
        config["cache"] = {"enabled": False}  # the same arguments must still reach the guard
    path.write_text(json.dumps(config))
    return path


def commands(workdir: Path, ports: dict[str, int]) -> dict[str, tuple[list[str], str]]:
    """Name -> (argv, readiness path) for the fake guard, the MCP server and both proxies."""
    run = [sys.executable, "-m"]
    result = {
        "guard": ([*run, "tests.fakes.guard", "--port", str(ports["guard"])], "/v1/models"),
        "direct": ([*run, "bench.mcp", "--serve", str(ports["direct"])], "/healthz"),
    }
    for name in TARGETS[1:]:
        config = write_config(workdir / name, ports, cache=name == "proxy-cache")
        result[name] = proxy_command(config, ports[name])
    return result


@contextmanager
def services(workdir: Path) -> Iterator[dict[str, str]]:
    """Start the fake guard, the MCP server and both proxies; yield target name -> MCP URL."""
    ports = {name: free_port() for name in ("guard", *TARGETS)}
    with children() as group:
        for name, (argv, ready_path) in commands(workdir, ports).items():
            group.launch(argv, workdir / f"{name}.log", f"http://{HOST}:{ports[name]}{ready_path}")
        urls = {name: f"http://{HOST}:{ports[name]}/mcp/{SERVER}" for name in TARGETS[1:]}
        yield {"direct": f"http://{HOST}:{ports['direct']}/mcp"} | urls


class Session:
    """One client's MCP session with one target: its headers and its request ids."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url
        self.headers = {"accept": ACCEPT}
        self.ids = itertools.count(1)

    async def open(self) -> None:
        """`initialize`, then `notifications/initialized`; the session id comes back on both."""
        params = {
            "protocolVersion": LATEST_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bench.mcp", "version": "1"},
        }
        reply = await self.post({"id": next(self.ids), "method": "initialize", "params": params})
        reply.raise_for_status()
        self.headers |= {
            "mcp-session-id": reply.headers["mcp-session-id"],
            "mcp-protocol-version": reply.json()["result"]["protocolVersion"],
        }
        notified = await self.post({"method": "notifications/initialized"})
        if notified.status_code != 202:
            raise RuntimeError(f"{self.url}: notifications/initialized got {notified.status_code}")

    async def post(self, message: dict[str, Any]) -> httpx.Response:
        body = {"jsonrpc": "2.0"} | message
        return await self.client.post(self.url, json=body, headers=self.headers)

    async def call_echo(self, batch: Batch) -> None:
        """One `tools/call`, timed to its whole answer; a wrong answer counts as an error."""
        params = {"name": "echo", "arguments": {"text": TEXT}}
        message = {"id": next(self.ids), "method": "tools/call", "params": params}
        started = time.perf_counter()
        try:
            reply: httpx.Response | None = await self.post(message)
        except httpx.HTTPError:  # timeouts and refused connections count as errors
            reply = None
        elapsed_ms = (time.perf_counter() - started) * 1000
        if reply is None or not echoed(reply):
            batch.errors += 1
            return
        batch.latencies_ms.append(elapsed_ms)


def echoed(reply: httpx.Response) -> bool:
    """A 200 whose result is the tool's text, not an error or a refusal."""
    if reply.status_code != 200:
        return False
    result = reply.json().get("result", {})
    content = result.get("content") or [{}]
    return not result.get("isError") and content[0].get("text") == TEXT


async def run_batch(sessions: list[Session], calls: int) -> Batch:
    """`calls` calls shared out over the sessions, one worker per session."""
    batch = Batch()

    async def worker(session: Session, count: int) -> None:
        for _ in range(count):
            await session.call_echo(batch)

    workers = len(sessions)
    shares = [calls // workers + (i < calls % workers) for i in range(workers)]
    started = time.perf_counter()
    async with asyncio.timeout(BATCH_TIMEOUT_S):
        await asyncio.gather(*(worker(s, n) for s, n in zip(sessions, shares, strict=True) if n))
    batch.elapsed_s = time.perf_counter() - started
    return batch


async def open_sessions(
    stack: AsyncExitStack, url: str, concurrency: int, headers: dict[str, str]
) -> list[Session]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = await stack.enter_async_context(
        httpx.AsyncClient(
            limits=limits, headers=headers, timeout=REQUEST_TIMEOUT_S, trust_env=False
        )
    )
    sessions = [Session(client, url) for _ in range(concurrency)]
    for session in sessions:
        await session.open()
    return sessions


async def measure(
    urls: dict[str, str], concurrency: int, per_round: int, rounds: int
) -> dict[str, list[Batch]]:
    """Warm every target, then `rounds` rounds over the targets in a fresh random order."""
    results: dict[str, list[Batch]] = {name: [] for name in urls}
    async with AsyncExitStack() as stack:
        sessions = {}
        for name, url in urls.items():
            # The MCP server itself takes no key; the proxies take the tenant's.
            headers = {} if name == "direct" else {"authorization": f"Bearer {KEY}"}
            sessions[name] = await open_sessions(stack, url, concurrency, headers)
            await run_batch(sessions[name], WARMUP_CALLS * concurrency)
        for _ in range(rounds):
            for name in random.sample(list(urls), k=len(urls)):
                results[name].append(await run_batch(sessions[name], per_round))
    return results


def guard_calls(audit: Path) -> dict[str, float]:
    """Per `tools/call` record: guard calls made and verdicts taken from the cache (medians)."""
    made, cached = [], []
    for line in audit.read_text().splitlines():
        record = json.loads(line)
        if (record.get("mcp") or {}).get("method") != "tools/call":
            continue
        checks = [record.get(side) or {} for side in ("input", "output")]
        made.append(sum(check.get("guard_calls", 0) for check in checks))
        cached.append(sum(check.get("cached", 0) for check in checks))
    if not made:
        return {}
    return {"guard_calls": statistics.median(made), "cached": statistics.median(cached)}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| c | target | calls | p50 ms | p95 ms | errors | added p50 vs direct, median of "
        "rounds [min..max] | guard calls / cached verdicts per call (median) |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for level in report["levels"]:
        for name, row in level["targets"].items():
            added = MISSING
            if name != "direct":
                added = added_cell(row["added_p50_ms"], row["added_p50_range_ms"])
            audit = report["audit"].get(name)
            judged = f"{audit['guard_calls']:g} / {audit['cached']:g}" if audit else MISSING
            latency = f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f}"
            cells = [str(level["concurrency"]), name, str(row["requests"]), latency]
            lines.append("| " + " | ".join([*cells, str(row["errors"]), added, judged]) + " |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600, help="per target per level")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.calls < args.rounds or min(args.concurrency) < 1:
        parser.error("need rounds >= 1, calls >= rounds and every concurrency >= 1")
    return args


def main() -> None:
    args = parse_args()
    if args.serve:  # the `direct` target's own process
        serve(mcp_app(), args.serve)
        return
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM also stops the children
    per_round = args.calls // args.rounds
    report: dict[str, Any] = {"per_round": per_round, "levels": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guardproxy-mcp-") as tmp:
        with services(Path(tmp)) as urls:
            for concurrency in args.concurrency:
                results = asyncio.run(measure(urls, concurrency, per_round, args.rounds))
                targets = {name: summarize(results[name], results["direct"]) for name in TARGETS}
                report["levels"].append({"concurrency": concurrency, "targets": targets})
        audits = {name: guard_calls(Path(tmp) / name / "audit.jsonl") for name in TARGETS[1:]}
        report["audit"] = audits
    report["wall_s"] = round(time.perf_counter() - started, 1)
    emit(report, markdown(report), args.json)


if __name__ == "__main__":
    main()
