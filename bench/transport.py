"""The outbound HTTP stack, side by side in one run: guardproxy over httpx's own transport
(httpcore) against guardproxy over aiohttp's (httpx-aiohttp), with the same checks.

Starts the instant fake upstream and fake guard and two proxies (input and output checks on,
so three outbound calls per request) that differ only in `http_transport`. For each
concurrency level, after a warm-up, R interleaved rounds in a fresh random order; reports
p50, RPS and the added p50 over `direct` (median over rounds), as bench.overhead does.
Run from the repository root: ``python -m bench.transport [--requests 2000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from bench.common import HOST, children, free_port
from bench.overhead import measure, write_config
from bench.report import summarize

TRANSPORTS = ("httpx", "aiohttp")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per target per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ports = {name: free_port() for name in ("upstream", "guard", *TRANSPORTS)}
    run = [sys.executable, "-m"]
    with tempfile.TemporaryDirectory() as work, children() as group:
        workdir = Path(work)
        for fake in ("upstream", "guard"):
            argv = [*run, f"tests.fakes.{fake}", "--port", str(ports[fake])]
            group.launch(argv, workdir / f"{fake}.log", f"http://{HOST}:{ports[fake]}/v1/models")
        for transport in TRANSPORTS:
            config = write_config(workdir / transport, ports["guard"], ports["upstream"], True)
            settings = json.loads(config.read_text())
            config.write_text(json.dumps({**settings, "http_transport": transport}))
            port = str(ports[transport])
            serve = ["serve", "--config", str(config), "--host", HOST, "--port", port]
            group.launch([*run, "guardproxy", *serve, "--log-level", "warning"],
                         workdir / f"{transport}.log", f"http://{HOST}:{port}/healthz")  # fmt: skip
        urls = {"direct": f"http://{HOST}:{ports['upstream']}/v1/chat/completions"}
        urls |= {t: f"http://{HOST}:{ports[t]}/v1/chat/completions" for t in TRANSPORTS}
        print("| concurrency | target | p50 ms | RPS | added p50 ms | errors |")
        print("|---|---|---|---|---|---|")
        for concurrency in args.concurrency:
            per_round = max(1, args.requests // args.rounds)
            results = asyncio.run(measure(urls, concurrency, per_round, args.rounds))
            for name in urls:
                row = summarize(results[name], results["direct"])
                print(f"| {concurrency} | {name} | {row['p50_ms']:.2f} | {row['rps']:.0f} | "
                      f"{row['added_p50_ms']:.2f} | {row['errors']} |")  # fmt: skip


if __name__ == "__main__":
    main()
