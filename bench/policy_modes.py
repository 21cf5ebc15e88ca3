"""Guard latency per Nemotron 3.5 policy mode: does `separate` (two calls) cost one guard call?

    python -m bench.policy_modes [--requests 20] [--rounds 5] [--guard-delay-s 0.1]

One fake guard that answers after a fixed delay, one fake upstream, one proxy with a tenant per
mode. Rounds interleave the modes; the report gives the median over rounds of each round's
median input-check latency (from the audit record), the guard calls per check, and the median
end-to-end request time (input check only, output check off).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import HOST, children, emit, free_port, hashed_key, write_guardproxy_config

MODES = ("standard", "taxonomy", "policy", "separate")
RULES = "Never recommend a competitor bank."
CUSTOM = [{"name": "Competitor Promotion", "description": "Recommending another bank."}]


def tenant(mode: str) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "tenant": mode,
        "keys": [hashed_key(f"sk-{mode}")],
        "guard": "nemotron",
        "upstream": "app",
        "output": {"enabled": False},
    }
    if mode != "standard":
        policy |= {"policy_mode": mode, "policy": RULES, "custom_categories": CUSTOM}
    return policy


def measure(url: str, audit: Path, requests: int, rounds: int) -> dict[str, Any]:
    per_mode: dict[str, dict[str, list[float]]] = {m: {"check": [], "total": []} for m in MODES}
    calls: dict[str, set[int]] = {m: set() for m in MODES}
    with httpx.Client(timeout=30, trust_env=False) as client:
        for _ in range(rounds):
            for mode in MODES:
                totals = []
                for _ in range(requests):
                    started = time.perf_counter()
                    body = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}
                    headers = {"authorization": f"Bearer sk-{mode}"}
                    client.post(url, json=body, headers=headers).raise_for_status()
                    totals.append((time.perf_counter() - started) * 1000)
                per_mode[mode]["total"].append(statistics.median(totals))
        time.sleep(1.5)  # the audit writer flushes in batches
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    for mode in MODES:
        checks = [r["input"] for r in records if r["tenant"] == mode]
        for start in range(0, len(checks), requests):
            chunk = checks[start : start + requests]
            per_mode[mode]["check"].append(statistics.median(c["latency_ms"] for c in chunk))
        calls[mode] = {c["guard_calls"] for c in checks}
    return {
        mode: {
            "input_check_ms": round(statistics.median(per_mode[mode]["check"]), 1),
            "request_ms": round(statistics.median(per_mode[mode]["total"]), 1),
            "guard_calls_per_check": sorted(calls[mode]),
        }
        for mode in MODES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--guard-delay-s", type=float, default=0.1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, children() as group:
        work = Path(tmp)
        ports = {name: free_port() for name in ("guard", "upstream", "proxy")}
        run = [sys.executable, "-m"]
        guard = ["--port", str(ports["guard"]), "--delay-s", str(args.guard_delay_s)]
        group.launch(
            [*run, "tests.fakes.guard", *guard],
            work / "guard.log",
            f"http://{HOST}:{ports['guard']}/v1/models",
        )
        group.launch(
            [*run, "tests.fakes.upstream", "--port", str(ports["upstream"])],
            work / "upstream.log",
            f"http://{HOST}:{ports['upstream']}/v1/models",
        )
        config = write_guardproxy_config(
            work, ports["guard"], ports["upstream"], [tenant(m) for m in MODES]
        )
        serve = ["serve", "--config", str(config), "--host", HOST, "--port", str(ports["proxy"])]
        group.launch(
            [*run, "guardproxy", *serve, "--log-level", "warning"],
            work / "proxy.log",
            f"http://{HOST}:{ports['proxy']}/healthz",
        )
        url = f"http://{HOST}:{ports['proxy']}/v1/chat/completions"
        results = measure(url, work / "audit.jsonl", args.requests, args.rounds)
    report = {
        "guard_delay_s": args.guard_delay_s,
        "results": results,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    rows = ["| mode | input check, ms | request, ms | guard calls per check |", "|---|---|---|---|"]
    rows += [
        f"| {m} | {r['input_check_ms']} | {r['request_ms']} | {r['guard_calls_per_check']} |"
        for m, r in results.items()
    ]
    emit(report, "\n".join(rows), args.json)


if __name__ == "__main__":
    main()
