"""What observing costs: throughput with Prometheus metrics and the audit database, at c=32.

Targets, each its own `guardproxy serve` process on the same instant fakes (checks on):
- `bare`: the JSON-lines trail only; metric recording replaced by no-ops (this module's
  `--serve` entry patches `Metrics`), so the difference is what metrics cost;
- `metrics`: as shipped, metrics on, JSON-lines trail;
- `metrics+sqlite`: and the SQLite audit database (WAL, batched);
- `metrics+postgres`: and PostgreSQL instead, with `--postgres URL`.
Method: warm-up, then interleaved rounds in random order; medians over rounds of each
round's throughput (requests / wall time) and p50 latency. Run from the repository root:
``python -m bench.observe_cost [--requests 6000] [--rounds 5] [--concurrency 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    GUARD_PROTOCOL,
    HOST,
    children,
    emit,
    free_port,
    hashed_key,
    write_guardproxy_config,
)
from bench.overhead import KEY, measure
from bench.report import percentile


def write_config(folder: Path, ports: dict[str, int], database: str | None) -> Path:
    policy = {"tenant": "bench", "keys": [hashed_key(KEY)], "guard": "nemotron", "upstream": "app"}
    path = write_guardproxy_config(folder, ports["guard"], ports["upstream"], [policy])
    if database:
        config = json.loads(path.read_text())
        config["audit"]["database"] = database
        path.write_text(json.dumps(config))
    return path


def targets(folder: Path, ports: dict[str, int], postgres: str | None) -> dict[str, Any]:
    """Name -> (config, patched): the variants measured side by side."""
    found = {
        "bare": (write_config(folder / "bare", ports, None), True),
        "metrics": (write_config(folder / "metrics", ports, None), False),
        "metrics+sqlite": (
            write_config(folder / "sqlite", ports, f"sqlite:///{folder / 'audit.db'}"),
            False,
        ),
    }
    if postgres:
        found["metrics+postgres"] = (write_config(folder / "pg", ports, postgres), False)
    return found


def serve(config: Path, port: int, bare: bool) -> None:
    """One target: `guardproxy serve`, with metric recording stubbed out for `bare`."""
    if bare:
        from guardproxy.observe.metrics import Metrics

        Metrics.record = lambda self, *a, **k: None  # type: ignore[method-assign]
        Metrics.guard_call = lambda self, *a, **k: None  # type: ignore[method-assign]
    from guardproxy.cli import main as cli

    argv = ["serve", "--config", str(config), "--host", HOST, "--port", str(port)]
    sys.exit(cli([*argv, "--log-level", "warning"]))


def summary(batches: list[Any]) -> dict[str, float]:
    rps = [len(b.latencies_ms) / b.elapsed_s for b in batches if b.elapsed_s]
    p50 = [percentile(b.latencies_ms, 50) for b in batches]
    return {
        "rps": round(statistics.median(rps), 1),
        "p50_ms": round(statistics.median(p50), 2),
        "errors": sum(b.errors for b in batches),
    }


def table(report: dict[str, Any]) -> str:
    base = report["targets"]["bare"]["rps"]
    lines = ["| target | req/s (median) | vs bare | p50 ms | errors |", "|---|---:|---:|---:|---:|"]
    for name, row in report["targets"].items():
        delta = (row["rps"] - base) / base * 100 if base else 0.0
        lines.append(
            f"| {name} | {row['rps']} | {delta:+.1f} % | {row['p50_ms']} | {row['errors']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000, help="per target")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--postgres", help="also measure this audit database URL")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--serve", nargs=3, metavar=("CONFIG", "PORT", "BARE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), int(args.serve[1]), args.serve[2] == "1")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guardproxy-bench-") as tmp, children() as group:
        folder = Path(tmp)
        ports = {"guard": free_port(), "upstream": free_port()}
        run = [sys.executable, "-m"]
        fakes = {"upstream": [], "guard": ["--protocol", GUARD_PROTOCOL]}
        for name, extra in fakes.items():
            argv = [*run, f"tests.fakes.{name}", "--port", str(ports[name]), *extra]
            group.launch(argv, folder / f"{name}.log", f"http://{HOST}:{ports[name]}/v1/models")
        urls = {}
        for name, (config, bare) in targets(folder, ports, args.postgres).items():
            port = free_port()
            argv = [*run, "bench.observe_cost", "--serve", str(config), str(port), str(int(bare))]
            group.launch(argv, folder / f"{name}.log", f"http://{HOST}:{port}/healthz")
            urls[name] = f"http://{HOST}:{port}/v1/chat/completions"
        per_round = max(1, args.requests // args.rounds)
        results = asyncio.run(measure(urls, args.concurrency, per_round, args.rounds))
    machine = {"platform": platform.platform(), "cpus": os.cpu_count()}
    report = {
        "machine": machine,
        "concurrency": args.concurrency,
        "per_round": per_round,
        "rounds": args.rounds,
        "targets": {name: summary(batches) for name, batches in results.items()},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    emit(report, table(report), args.json)


if __name__ == "__main__":
    main()
