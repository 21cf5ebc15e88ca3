"""Proxies that differ in one setting, side by side in one run, with the same checks.

`python -m bench.transport`: guardproxy over httpx's own transport (httpcore) against
guardproxy over aiohttp's (httpx-aiohttp). `python -m bench.transport --workers`: one worker
against two (`serve --workers 2`), both over aiohttp.

Starts the instant fake upstream and fake guard and the proxies (input and output checks on,
so three outbound calls per request). For each concurrency level, after a warm-up, R
interleaved rounds in a fresh random order; reports p50, RPS and the added p50 over `direct`
(median over rounds), as bench.overhead does.
Run from the repository root: ``python -m bench.transport [--requests 2000] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from bench import litellm_target
from bench.common import HOST, children, free_port
from bench.overhead import measure, write_config
from bench.report import summarize

# name -> (guardproxy.yaml keys, extra `serve` arguments)
Variants = dict[str, tuple[dict[str, str], list[str]]]
TRANSPORTS: Variants = {
    "httpx": ({"http_transport": "httpx"}, []),
    "aiohttp": ({"http_transport": "aiohttp"}, []),
}
WORKERS: Variants = {"1 worker": ({}, ["--workers", "1"]), "2 workers": ({}, ["--workers", "2"])}
LITELLM = "litellm-proxy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per target per level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", action="store_true", help="compare 1 and 2 workers")
    parser.add_argument(
        "--litellm", action="store_true",
        help="guardproxy against LiteLLM's proxy with the same two guard calls per request",
    )  # fmt: skip
    args = parser.parse_args()
    variants = WORKERS if args.workers else TRANSPORTS
    if args.litellm:
        variants = {"guardproxy": TRANSPORTS["aiohttp"]}
    ports = {name: free_port() for name in ("upstream", "guard", LITELLM, *variants)}
    run = [sys.executable, "-m"]
    with tempfile.TemporaryDirectory() as work, children() as group:
        workdir = Path(work)
        for fake in ("upstream", "guard"):
            argv = [*run, f"tests.fakes.{fake}", "--port", str(ports[fake])]
            group.launch(argv, workdir / f"{fake}.log", f"http://{HOST}:{ports[fake]}/v1/models")
        for number, (name, (keys, extra)) in enumerate(variants.items()):
            folder = workdir / f"proxy{number}"
            config = write_config(folder, ports["guard"], ports["upstream"], True)
            config.write_text(json.dumps({**json.loads(config.read_text()), **keys}))
            port = str(ports[name])
            serve = ["serve", "--config", str(config), "--host", HOST, "--port", port, *extra]
            group.launch([*run, "guardproxy", *serve, "--log-level", "warning"],
                         folder / "serve.log", f"http://{HOST}:{port}/healthz")  # fmt: skip
        urls = {"direct": f"http://{HOST}:{ports['upstream']}/v1/chat/completions"}
        urls |= {name: f"http://{HOST}:{ports[name]}/v1/chat/completions" for name in variants}
        if args.litellm:
            executable = litellm_target.ensure_installed(workdir / "litellm-install.log")
            config = litellm_target.write_config(workdir / "litellm", ports["upstream"])
            argv = litellm_target.command(executable, config, ports[LITELLM])
            env = litellm_target.environment(ports["guard"], workdir / "litellm-calls.log")
            ready = f"http://{HOST}:{ports[LITELLM]}{litellm_target.READY_PATH}"
            group.launch(argv, workdir / "litellm.log", ready, env, litellm_target.READY_TIMEOUT_S)
            urls[LITELLM] = f"http://{HOST}:{ports[LITELLM]}/v1/chat/completions"
        print("| concurrency | target | p50 ms | RPS | added p50 ms | errors |")
        print("|---|---|---|---|---|---|")
        for concurrency in args.concurrency:
            per_round = max(1, args.requests // args.rounds)
            results = asyncio.run(measure(urls, concurrency, per_round, args.rounds))
            for name in urls:
                row = summarize(results[name], results["direct"])
                print(f"| {concurrency} | {name} | {row['p50_ms']:.2f} | {row['rps']:.0f} | "
                      f"{row['added_p50_ms']:.2f} | {row['errors']} |")  # fmt: skip
        if args.litellm:  # the same work: its guardrail logs each guard call it makes
            calls = len((workdir / "litellm-calls.log").read_text().splitlines())
            sent = sum(args.requests // args.rounds * args.rounds + 50 for _ in args.concurrency)
            print(f"\nLiteLLM guard calls per request: {calls / sent:.2f}")


if __name__ == "__main__":
    main()
