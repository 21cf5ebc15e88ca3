"""One pipeline, three APIs: what the proxy adds per wire API, side by side in one run.

Starts the fake upstream, the fake guard (both instant) and one proxy with input and output
checks on. For each API (Chat Completions, Responses, Messages) and each of `direct` (the fake
upstream's own endpoint) and `proxy`, R interleaved rounds in a fresh random order send N/R
sequential requests, whole or streamed. Reports the median over rounds of the round p50 for
each target, the proxy's added p50 (proxy - direct).
Run from the repository root: ``python -m bench.apis [--requests 300] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import GUARD_PROTOCOL, HOST, children, free_port
from bench.overhead import KEY, write_config

Q = QUESTION = "What is the capital of France?"
APIS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat.completions": (
        "/v1/chat/completions",
        {"model": "fake-llm", "messages": [{"role": "user", "content": QUESTION}]},
    ),
    "responses": ("/v1/responses", {"model": "fake-llm", "input": QUESTION}),
    "messages": (
        "/v1/messages",
        {
            "model": "fake-llm",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": QUESTION}],
        },
    ),
}
HEADERS = {"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"}


def one(client: httpx.Client, url: str, body: dict[str, Any], stream: bool) -> float:
    started = time.perf_counter()
    with client.stream("POST", url, json={**body, "stream": stream}) as response:
        response.read()
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
    return (time.perf_counter() - started) * 1000


def measure(base: dict[str, str], per_round: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    with httpx.Client(headers=HEADERS, timeout=10, trust_env=False) as client:
        for stream in (False, True):
            for api, (path, body) in APIS.items():
                p50s: dict[str, list[float]] = {"direct": [], "proxy": []}
                for target in base:  # warm-up
                    for _ in range(20):
                        one(client, base[target] + path, body, stream)
                for _ in range(rounds):
                    for target in random.sample(list(base), k=len(base)):
                        times = [one(client, base[target] + path, body, stream)
                                 for _ in range(per_round)]  # fmt: skip
                        p50s[target].append(statistics.median(times))
                direct, proxy = (statistics.median(p50s[t]) for t in ("direct", "proxy"))
                rows.append({"api": api, "stream": stream, "direct_p50_ms": round(direct, 2),
                             "proxy_p50_ms": round(proxy, 2),
                             "added_p50_ms": round(proxy - direct, 2)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="per API, target and mode")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    ports = {name: free_port() for name in ("upstream", "guard", "proxy")}
    with tempfile.TemporaryDirectory() as work, children() as group:
        workdir = Path(work)
        run = [sys.executable, "-m"]
        upstream = [*run, "tests.fakes.upstream", "--port", str(ports["upstream"])]
        guard = [*run, "tests.fakes.guard", "--port", str(ports["guard"])]
        group.launch(
            upstream, workdir / "upstream.log", f"http://{HOST}:{ports['upstream']}/v1/models"
        )
        group.launch([*guard, "--protocol", GUARD_PROTOCOL], workdir / "guard.log",
                     f"http://{HOST}:{ports['guard']}/v1/models")  # fmt: skip
        config = write_config(workdir / "proxy", ports["guard"], ports["upstream"], True)
        serve = ["serve", "--config", str(config), "--host", HOST, "--port", str(ports["proxy"])]
        group.launch([*run, "guardproxy", *serve, "--log-level", "warning"],
                     workdir / "proxy.log", f"http://{HOST}:{ports['proxy']}/healthz")  # fmt: skip
        base = {name: f"http://{HOST}:{ports[port]}" for name, port in
                (("direct", "upstream"), ("proxy", "proxy"))}  # fmt: skip
        rows = measure(base, args.requests // args.rounds, args.rounds)
    print("| API | stream | direct p50 ms | proxy p50 ms | added p50 ms |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['api']} | {row['stream']} | {row['direct_p50_ms']} | "
              f"{row['proxy_p50_ms']} | {row['added_p50_ms']} |")  # fmt: skip


if __name__ == "__main__":
    main()
