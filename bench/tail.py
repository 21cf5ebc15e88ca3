"""Tail latency at c=32: the proxy's p99/p50 against the bare fake upstream's, in one run, and
what inside the proxy's process adds to it (loop stalls, GC pauses, audit trail writes).

Targets, each loaded in turn in interleaved rounds of a fresh random order:
- `direct`: the instant fake upstream;
- `proxy-on`: `guardproxy serve`, input and output checks on, instant fake guard;
- `proxy-on-probed`: the same app through `bench.stalls` (loop-lag, GC and flush probes);
- `proxy-on-gcfreeze`: probed, with gc.freeze() after startup;
- `proxy-on-gen0`: probed, with a 10x gen0 threshold (7000) after startup;
- `proxy-on-devnull`: probed, with the audit trail written to /dev/null instead of a file.
Reports per target the medians over rounds of p50, p99 and p99/p50, and the median of each
round's ratio of ratios (the target's p99/p50 over `direct`'s in the same round).
Run from the repository root: ``python -m bench.tail [--requests 4800] [--rounds 8]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import HOST, Children, children, emit, free_port
from bench.overhead import KEY, REQUEST_TIMEOUT_S, WARMUP_REQUESTS, commands, run_batch
from bench.probes import Probes
from bench.report import Batch
from bench.tail_report import app_split, markdown, summarize, trail_metrics

DIRECT, SHIPPED = "direct", "proxy-on"
# probed target -> (bench.stalls options, audit path; None keeps the file trail)
PROBED: dict[str, tuple[list[str], str | None]] = {
    "proxy-on-probed": ([], None),
    "proxy-on-gcfreeze": (["--gc-freeze"], None),
    "proxy-on-gen0": (["--gen0", "7000"], None),
    "proxy-on-devnull": ([], "/dev/null"),
}
CONTROL_TIMEOUT_S = 10.0


def probed_config(shipped: Path, folder: Path, audit: str | None) -> Path:
    """proxy-on's config, with the trail in `folder` (or at `audit`)."""
    config = json.loads(shipped.read_text())
    config["policies"] = str(shipped.parent / config["policies"])
    config["audit"]["path"] = audit or str(folder / "audit.jsonl")
    folder.mkdir(parents=True)
    (folder / "guardproxy.yaml").write_text(json.dumps(config))
    return folder / "guardproxy.yaml"


def start(workdir: Path, group: Children) -> dict[str, str]:
    """Start the fakes and every proxy; target name -> base URL."""
    ports = {name: free_port() for name in ("upstream", "guard", "floor", "proxy-off", SHIPPED)}
    ports |= {name: free_port() for name in PROBED}
    ready = {  # the same commands bench.overhead runs (it writes proxy-on's config)
        name: found
        for name, found in commands(workdir, ports).items()
        if name in ("upstream", "guard", SHIPPED)
    }
    shipped = workdir / SHIPPED / "guardproxy.yaml"
    for name, (extra, audit) in PROBED.items():
        config = probed_config(shipped, workdir / name, audit)
        argv = [sys.executable, "-m", "bench.stalls", "--config", str(config)]
        argv += ["--port", str(ports[name]), *extra, "--out", str(workdir / f"{name}.json")]
        ready[name] = (argv, "/healthz")
    for name, (argv, path) in ready.items():
        group.launch(argv, workdir / f"{name}.log", f"http://{HOST}:{ports[name]}{path}")
    bases = {DIRECT: f"http://{HOST}:{ports['upstream']}"}
    return bases | {name: f"http://{HOST}:{ports[name]}" for name in (SHIPPED, *PROBED)}


def trails(workdir: Path) -> dict[str, Path]:
    """The targets whose audit trail is a file, and where it is."""
    on_file = [name for name, (_, audit) in PROBED.items() if audit is None]
    return {name: workdir / name / "audit.jsonl" for name in (SHIPPED, *on_file)}


@dataclass(frozen=True)
class Plan:
    concurrency: int
    per_round: int
    rounds: int


async def one_round(
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient], name: str, base: str, plan: Plan,
    probes: Probes,
) -> Batch:  # fmt: skip
    """One round against one target, with the load generator's own loop probed meanwhile;
    a probed proxy measures only while it is loaded."""
    client, control = clients
    remote = name in PROBED
    probes.open()
    if remote:
        (await control.get(f"{base}/bench/open")).raise_for_status()
    try:
        return await run_batch(
            client, f"{base}/v1/chat/completions", plan.per_round, plan.concurrency
        )
    finally:
        await probes.close()
        if remote:
            (await control.get(f"{base}/bench/close")).raise_for_status()


async def scrape(control: httpx.AsyncClient, name: str, base: str) -> dict[str, Any]:
    """The probes' sums (probed targets) and the trail's own metrics, after the last round."""
    found: dict[str, Any] = {"metrics": trail_metrics((await control.get(f"{base}/metrics")).text)}
    if name in PROBED:
        found["probes"] = (await control.get(f"{base}/bench/report")).json()
    return found


async def measure(
    bases: dict[str, str], plan: Plan
) -> tuple[dict[str, list[Batch]], dict[str, Any]]:
    size = plan.concurrency
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    options: dict[str, Any] = {"timeout": REQUEST_TIMEOUT_S, "trust_env": False}
    headers = {"Authorization": f"Bearer {KEY}"}
    results: dict[str, list[Batch]] = {name: [] for name in bases}
    async with AsyncExitStack() as stack:
        control = await stack.enter_async_context(
            httpx.AsyncClient(timeout=CONTROL_TIMEOUT_S, trust_env=False)
        )
        clients = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(limits=limits, headers=headers, **options)
            )
            for name in bases
        }
        for name, base in bases.items():
            await run_batch(clients[name], f"{base}/v1/chat/completions", WARMUP_REQUESTS, size)
        loadgen = {name: Probes() for name in bases}
        for _ in range(plan.rounds):
            for name in random.sample(list(bases), k=len(bases)):
                pair = (clients[name], control)
                results[name].append(await one_round(pair, name, bases[name], plan, loadgen[name]))
        inside = {name: await scrape(control, name, bases[name]) for name in (SHIPPED, *PROBED)}
    for name, probes in loadgen.items():
        inside.setdefault(name, {})["loadgen"] = probes.report()
    return results, inside


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4800, help="per target")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--json", type=Path, help="also write the full report here")
    args = parser.parse_args()
    if args.rounds < 1 or args.requests < args.rounds or args.concurrency < 1:
        parser.error("need rounds >= 1, requests >= rounds and concurrency >= 1")
    return args


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM also stops the children
    plan = Plan(args.concurrency, max(1, args.requests // args.rounds), args.rounds)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guardproxy-tail-") as tmp:
        with children() as group:
            bases = start(Path(tmp), group)
            results, inside = asyncio.run(measure(bases, plan))
        for name, trail in trails(Path(tmp)).items():  # complete: the proxies have stopped
            inside[name]["split"] = app_split(trail.read_text().splitlines(), WARMUP_REQUESTS)
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "plan": asdict(plan),
        "targets": summarize(results, DIRECT),
        "inside": inside,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    emit(report, markdown(report), args.json)


if __name__ == "__main__":
    main()
