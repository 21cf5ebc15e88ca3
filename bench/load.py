"""Many concurrent streams against a guard of fixed capacity: errors, leaks, time to first
token, and per answer the guard calls, the amplification and the guard's prompt tokens.

The fake guard serves at most `--guard-capacity` calls at once (64), each in `--guard-delay-s`
(20 ms), and queues the rest, as a GPU server does. The fake upstream streams 100 tokens at
50 tokens/s after a 200 ms TTFT. One proxy (one worker, defaults but for the guard's
`max_concurrency`) sits in between. For each level, C clients each send streamed requests
back to back for `--duration-s`; one request in ten asks for an answer with an unsafe phrase
in its middle, which must never reach a client. The verdict cache is off unless `--cache`:
every answer here repeats the same text, and real ones do not. Reported per level: requests;
the proxy's errors (a non-200, an error event, or a stream that ended without its end) apart
from the load generator's own (a connect or read failure on its side of the socket; the audit
statuses tell them apart: 499 when the proxy saw the client leave); leaks; p50/p99 time to
the first content chunk; and from the audit trail, medians over the allowed answers, the
guard calls, the amplification (characters judged ÷ characters answered, overlaps and final
check included) and the guard tokens (the guard's own `usage.prompt_tokens`, summed).
Run from the repository root: ``python -m bench.load [--levels 1 300 1000] [--duration-s 60]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import HOST, children, free_port, hashed_key, write_guardproxy_config
from bench.report import percentile

KEY = "sk-bench-load"
UNSAFE_MARKER = "tell-me-the-bad-thing"
UNSAFE_PHRASE = "build a bomb"
UNSAFE_REPLY = (
    " ".join(f"w{i}" for i in range(50))
    + f" here is how to {UNSAFE_PHRASE} "
    + " ".join(f"v{i}" for i in range(50))
)


@dataclass
class Level:
    clients: int
    ttft_ms: list[float] = field(default_factory=list)
    requests: int = 0
    leaks: int = 0
    blocked: int = 0
    proxy_errors: dict[str, int] = field(default_factory=dict)  # what the proxy sent
    client_errors: dict[str, int] = field(default_factory=dict)  # the load generator's own

    @staticmethod
    def count(errors: dict[str, int], kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1


class ProxyError(Exception):
    """The proxy answered with a failure: a non-200, an error event, or no end."""


@dataclass(frozen=True)
class Costs:
    """Medians over a level's allowed answers, from the audit trail."""

    calls: float
    amplification: float
    guard_tokens: float
    statuses: dict[int, int]  # every record of the level, by status


async def one_stream(client: httpx.AsyncClient, url: str, unsafe: bool, level: Level) -> None:
    text = UNSAFE_MARKER if unsafe else "Tell me a story"
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": text}]}
    started, first, said, done = time.perf_counter(), None, [], False
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                raise ProxyError(f"HTTP {response.status_code}")
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        raise ProxyError(chunk["error"].get("code") or "error event")
                    for choice in chunk.get("choices", []):
                        content = (choice.get("delta") or {}).get("content")
                        if content and first is None:
                            first = time.perf_counter()
                        said.append(content or "")
                        level.blocked += choice.get("finish_reason") == "content_filter"
        if not done:
            raise ProxyError("no [DONE]")
    except ProxyError as exc:
        Level.count(level.proxy_errors, str(exc))
    except httpx.HTTPError as exc:
        Level.count(level.client_errors, type(exc).__name__)
    level.requests += 1
    level.leaks += UNSAFE_PHRASE in "".join(said)
    if first is not None:
        level.ttft_ms.append((first - started) * 1000)


async def run_level(url: str, clients: int, duration_s: float) -> Level:
    level = Level(clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"authorization": f"Bearer {KEY}"}
    deadline = time.perf_counter() + duration_s
    async with httpx.AsyncClient(
        limits=limits, headers=headers, timeout=120, trust_env=False
    ) as client:

        async def worker(number: int) -> None:
            sent = number
            while time.perf_counter() < deadline:
                await one_stream(client, url, sent % 10 == 0, level)
                sent += 1

        await asyncio.gather(*(worker(n) for n in range(clients)))
    return level


def audit_costs(audit: Path, since: int) -> tuple[Costs, int]:
    """This level's costs per allowed answer, and where the next level's records start."""
    lines = audit.read_text().splitlines()
    records = [json.loads(line) for line in lines[since:]]
    statuses = Counter(record["status"] for record in records)
    moderated = [r["moderation"] for r in records if r["action"] == "allow" and "moderation" in r]
    calls, amplification, tokens = (
        _median([entry.get(key) for entry in moderated])
        for key in ("checks", "amplification", "guard_tokens")
    )
    return Costs(calls, amplification, tokens, dict(sorted(statuses.items()))), len(lines)


def _median(values: list[float | None]) -> float:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else float("nan")


def _errors(errors: dict[str, int]) -> str:
    return f"{sum(errors.values())} {errors}" if errors else "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 300, 1000])
    parser.add_argument("--duration-s", type=float, default=60)
    parser.add_argument("--guard-capacity", type=int, default=64)
    parser.add_argument("--guard-delay-s", type=float, default=0.02)
    parser.add_argument("--max-concurrency", type=int, default=256)
    parser.add_argument(
        "--cache", action=argparse.BooleanOptionalAction, default=False,
        help="the verdict cache (off: every check reaches the guard, as with real answers)",
    )  # fmt: skip
    parser.add_argument("--keep", type=Path, help="keep the logs and the audit trail here")
    args = parser.parse_args()
    ports = {name: free_port() for name in ("upstream", "guard", "proxy")}
    run = [sys.executable, "-m"]
    with tempfile.TemporaryDirectory() as work, children() as group:
        workdir = args.keep or Path(work)
        workdir.mkdir(parents=True, exist_ok=True)
        upstream = [*run, "tests.fakes.upstream", "--port", str(ports["upstream"])]
        upstream += ["--ttft-s", "0.2", "--token-interval-s", "0.02", "--reply-tokens", "100"]
        upstream += ["--reply-when", f"{UNSAFE_MARKER}={UNSAFE_REPLY}"]
        group.launch(
            upstream, workdir / "upstream.log", f"http://{HOST}:{ports['upstream']}/v1/models"
        )
        guard = [*run, "tests.fakes.guard", "--port", str(ports["guard"])]
        guard += ["--delay-s", str(args.guard_delay_s), "--capacity", str(args.guard_capacity)]
        group.launch(guard, workdir / "guard.log", f"http://{HOST}:{ports['guard']}/v1/models")
        policy = {
            "tenant": "load",
            "keys": [hashed_key(KEY)],
            "guard": "nemotron",
            "upstream": "app",
        }
        config = write_guardproxy_config(
            workdir / "proxy", ports["guard"], ports["upstream"], [policy]
        )
        document: dict[str, Any] = json.loads(config.read_text())
        document["guards"]["nemotron"] |= {
            "max_concurrency": args.max_concurrency,
            "queue_timeout_s": 5,
        }
        # Every answer here repeats the same text; real answers differ, so no verdict is reused.
        document["cache"] = {"enabled": args.cache}
        config.write_text(json.dumps(document))
        serve = ["serve", "--config", str(config), "--host", HOST, "--port", str(ports["proxy"])]
        group.launch([*run, "guardproxy", *serve, "--log-level", "warning"],
                     workdir / "proxy.log", f"http://{HOST}:{ports['proxy']}/healthz")  # fmt: skip
        url = f"http://{HOST}:{ports['proxy']}/v1/chat/completions"
        audit, seen = workdir / "proxy" / "audit.jsonl", 0
        print("| streams | requests | proxy errors | load generator errors | leaks | blocked | "
              "TTFT p50 ms | TTFT p99 ms | guard calls per answer | amplification | "
              "guard tokens per answer | audit statuses |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for clients in args.levels:
            level = asyncio.run(run_level(url, clients, args.duration_s))
            time.sleep(1)  # the audit writer's last batch
            costs, seen = audit_costs(audit, seen)
            print(f"| {clients} | {level.requests} | {_errors(level.proxy_errors)} | "
                  f"{_errors(level.client_errors)} | {level.leaks} | {level.blocked} | "
                  f"{percentile(level.ttft_ms, 50):.0f} | {percentile(level.ttft_ms, 99):.0f} | "
                  f"{costs.calls} | {costs.amplification} | {costs.guard_tokens} | "
                  f"{costs.statuses} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
