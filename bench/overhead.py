"""Gateway overhead: direct-to-upstream vs proxy with checks off vs proxy with checks on.

Method (see shared reference A4): same box, same instant fakes, warm-up, interleaved rounds in
random order, median over rounds of the per-round p50 difference, errors reported next to latency.
Run from the repository root: ``python -m bench.overhead [--requests N] [--concurrency 1 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    GUARD_PROTOCOL,
    HOST,
    children,
    emit,
    free_port,
    hashed_key,
    proxy_command,
    write_guardproxy_config,
)
from bench.report import TARGETS, Batch, markdown, summarize

KEY = "sk-bench"
BODY = {
    "model": "fake-llm",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}
WARMUP_REQUESTS = 50
REQUEST_TIMEOUT_S = 10.0
BATCH_TIMEOUT_S = 300.0  # one round of one target; keeps every loop bounded in time
OVERHEAD_HEADER = "x-guardproxy-overhead-ms"


def write_config(folder: Path, guard_port: int, upstream_port: int, checks: bool) -> Path:
    """Write guardproxy.yaml and one tenant policy under `folder`."""
    policy = {
        "tenant": "bench",
        "keys": [hashed_key(KEY)],
        "guard": "nemotron",
        "upstream": "app",
        "input": {"enabled": checks},
        "output": {"enabled": checks},
    }
    return write_guardproxy_config(folder, guard_port, upstream_port, [policy])


def commands(workdir: Path, ports: dict[str, int]) -> dict[str, tuple[list[str], str]]:
    """Name -> (argv, readiness path) for the two fakes and the two proxies."""
    run = [sys.executable, "-m"]
    fakes = {"upstream": [], "guard": ["--protocol", GUARD_PROTOCOL]}
    result = {
        name: ([*run, f"tests.fakes.{name}", "--port", str(ports[name]), *extra], "/v1/models")
        for name, extra in fakes.items()
    }
    upstream_url = f"http://{HOST}:{ports['upstream']}/v1/chat/completions"
    floor = [*run, "bench.floor", "--port", str(ports["floor"]), "--upstream", upstream_url]
    result["floor"] = (floor, "/healthz")
    for name, checks in (("proxy-off", False), ("proxy-on", True)):
        config = write_config(workdir / name, ports["guard"], ports["upstream"], checks)
        result[name] = proxy_command(config, ports[name])
    return result


@contextmanager
def services(workdir: Path) -> Iterator[dict[str, str]]:
    """Start the fakes and both proxies; yield target name -> chat URL; always stop them."""
    ports = {name: free_port() for name in ("upstream", "guard", *TARGETS[1:])}
    ports["direct"] = ports["upstream"]
    with children() as group:
        for name, (argv, ready_path) in commands(workdir, ports).items():
            # Children log to files: the proxy logs each outbound httpx request at INFO.
            group.launch(argv, workdir / f"{name}.log", f"http://{HOST}:{ports[name]}{ready_path}")
        yield {name: f"http://{HOST}:{ports[name]}/v1/chat/completions" for name in TARGETS}


async def send_one(client: httpx.AsyncClient, url: str, batch: Batch) -> None:
    started = time.perf_counter()
    try:
        response: httpx.Response | None = await client.post(url, json=BODY)
    except httpx.HTTPError:  # timeouts and refused connections count as errors, not latency
        response = None
    if response is None or response.status_code != 200:
        batch.errors += 1
        return
    batch.latencies_ms.append((time.perf_counter() - started) * 1000)
    if OVERHEAD_HEADER in response.headers:
        batch.overheads_ms.append(float(response.headers[OVERHEAD_HEADER]))
        checks = (response.headers.get(f"x-guardproxy-{s}") for s in ("input", "output"))
        batch.checks.add("/".join(str(c) for c in checks))


async def run_batch(client: httpx.AsyncClient, url: str, requests: int, concurrency: int) -> Batch:
    """Send `requests` requests with `concurrency` workers; each worker takes a fixed share."""
    batch = Batch()

    async def worker(count: int) -> None:
        for _ in range(count):
            await send_one(client, url, batch)

    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    started = time.perf_counter()
    async with asyncio.timeout(BATCH_TIMEOUT_S):
        await asyncio.gather(*(worker(share) for share in shares if share))
    batch.elapsed_s = time.perf_counter() - started
    return batch


async def measure(
    urls: dict[str, str], concurrency: int, per_round: int, rounds: int
) -> dict[str, list[Batch]]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {KEY}"}
    results: dict[str, list[Batch]] = {name: [] for name in urls}
    async with AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(
                    limits=limits, headers=headers, timeout=REQUEST_TIMEOUT_S, trust_env=False
                )
            )
            for name in urls
        }
        for name, url in urls.items():
            await run_batch(clients[name], url, WARMUP_REQUESTS, concurrency)
        for _ in range(rounds):
            for name in random.sample(list(urls), k=len(urls)):
                results[name].append(
                    await run_batch(clients[name], urls[name], per_round, concurrency)
                )
    return results


def parse_args(
    doc: str = __doc__, requests: int = 2000, concurrency: tuple[int, ...] = (1, 32)
) -> argparse.Namespace:
    """The flags of a benchmark built on `measure`: requests, concurrency levels, rounds, JSON."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--requests", type=int, default=requests, help="per target per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(concurrency))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the full report here")
    args = parser.parse_args()
    if args.rounds < 1 or args.requests < args.rounds or min(args.concurrency) < 1:
        parser.error("need rounds >= 1, requests >= rounds and every concurrency >= 1")
    return args


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM also stops the children
    per_round = max(1, args.requests // args.rounds)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count()}
    machine["python"] = platform.python_version()
    report: dict[str, Any] = {"machine": machine, "per_round": per_round, "levels": []}
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="guardproxy-bench-") as tmp,
        services(Path(tmp)) as urls,
    ):
        for concurrency in args.concurrency:
            results = asyncio.run(measure(urls, concurrency, per_round, args.rounds))
            targets = {name: summarize(results[name], results["direct"]) for name in TARGETS}
            report["levels"].append({"concurrency": concurrency, "targets": targets})
    report["wall_s"] = round(time.perf_counter() - started, 1)
    emit(report, markdown(report), args.json)


if __name__ == "__main__":
    main()
