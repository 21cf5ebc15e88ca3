"""Added latency of a guard chain: one guard against two guards side by side, in one run.

    python -m bench.chain [--requests 600] [--rounds 5] [--concurrency 1 8]

Targets, all on instant fakes: `direct` (the fake upstream), `one-guard` (a tenant with
`guard: nemotron`) and `chain` (`guards: [nemotron, injection]`, the fake vLLM classifier on
user and tool turns). Each proxy serves one tenant with the same key. The verdict cache is off,
so every request asks every guard. Rounds interleave the targets in random order
(`bench.overhead.measure`); the report gives the median over rounds of each round's p50
difference (`bench.report.summarize`): against `direct`, and the chain against one guard.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    HOST,
    children,
    emit,
    free_port,
    hashed_key,
    proxy_command,
    write_guardproxy_config,
)
from bench.overhead import KEY, measure, parse_args
from bench.report import MISSING, Batch, added_cell, ms, summarize
from tests.fakes.classifier import PROMPT_GUARD_LABELS

TARGETS = ("direct", "one-guard", "chain")
CHAIN = ["nemotron", {"guard": "injection", "turns": ["user", "tool"]}]
INJECTION_GUARD = {
    "protocol": "vllm-classify",
    "model": "meta-llama/Prompt-Guard-86M",
    "labels": list(PROMPT_GUARD_LABELS),
    "unsafe_labels": ["INJECTION", "JAILBREAK"],
    "timeout_s": 5,
}


def write_config(folder: Path, ports: dict[str, int], chain: bool) -> Path:
    """One tenant (`guard:` or `guards:`), both guards configured, the verdict cache off."""
    policy: dict[str, Any] = {"tenant": "bench", "keys": [hashed_key(KEY)], "upstream": "app"}
    policy |= {"guards": CHAIN} if chain else {"guard": "nemotron"}
    path = write_guardproxy_config(folder, ports["guard"], ports["upstream"], [policy])
    config = json.loads(path.read_text())
    # vLLM serves `/classify` at its root, so the guard's URL has no `/v1`.
    injection = INJECTION_GUARD | {"url": f"http://{HOST}:{ports['classifier']}"}
    config["guards"]["injection"] = injection
    config["cache"] = {"enabled": False}  # a repeated prompt must still reach the guards
    path.write_text(json.dumps(config))
    return path


def commands(workdir: Path, ports: dict[str, int]) -> dict[str, tuple[list[str], str]]:
    """Name -> (argv, readiness path) for the three fakes and the two proxies."""
    run = [sys.executable, "-m"]
    result = {
        "upstream": (
            [*run, "tests.fakes.upstream", "--port", str(ports["upstream"])],
            "/v1/models",
        ),
        "guard": ([*run, "tests.fakes.guard", "--port", str(ports["guard"])], "/v1/models"),
        "classifier": (
            [*run, "bench.classifier_server", "--port", str(ports["classifier"])],
            "/healthz",
        ),
    }
    for name in TARGETS[1:]:
        config = write_config(workdir / name, ports, chain=name == "chain")
        result[name] = proxy_command(config, ports[name])
    return result


@contextmanager
def services(workdir: Path) -> Iterator[dict[str, str]]:
    """Start the fakes and both proxies; yield target name -> chat URL; always stop them."""
    ports = {name: free_port() for name in ("upstream", "guard", "classifier", *TARGETS[1:])}
    ports["direct"] = ports["upstream"]
    with children() as group:
        for name, (argv, ready_path) in commands(workdir, ports).items():
            group.launch(argv, workdir / f"{name}.log", f"http://{HOST}:{ports[name]}{ready_path}")
        yield {name: f"http://{HOST}:{ports[name]}/v1/chat/completions" for name in TARGETS}


def chain_guards(audit: Path) -> list[str]:
    """The guards the chain's first input check names in its audit record: proof it ran both."""
    for line in audit.read_text().splitlines():
        return [guard["guard"] for guard in json.loads(line)["input"].get("guards", [])]
    return []


def level_rows(results: dict[str, list[Batch]]) -> dict[str, Any]:
    targets = {name: summarize(results[name], results["direct"]) for name in TARGETS}
    versus_one = summarize(results["chain"], results["one-guard"])
    targets["chain"]["added_vs_one_guard_ms"] = versus_one["added_p50_ms"]
    targets["chain"]["added_vs_one_guard_range_ms"] = versus_one["added_p50_range_ms"]
    return targets


def cells(row: dict[str, Any], baseline: bool) -> list[str]:
    """One target's table cells after its level and name."""
    versus = MISSING
    if "added_vs_one_guard_ms" in row:
        versus = added_cell(row["added_vs_one_guard_ms"], row["added_vs_one_guard_range_ms"])
    added = MISSING if baseline else added_cell(row["added_p50_ms"], row["added_p50_range_ms"])
    latency = [f"{row[key]:.2f}" for key in ("p50_ms", "p95_ms")]
    header = ms(row["overhead_header_p50_ms"], 3)
    return [str(row["requests"]), *latency, str(row["errors"]), added, versus, header]


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| c | target | requests | p50 ms | p95 ms | errors | added p50 vs direct, median of "
        "rounds [min..max] | added p50 vs one guard | overhead header p50 ms |",
        "|---|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for level in report["levels"]:
        for name, row in level["targets"].items():
            row_cells = [str(level["concurrency"]), name, *cells(row, name == "direct")]
            lines.append("| " + " | ".join(row_cells) + " |")
    lines.append(f"\nThe chain's input check named the guards {report['chain_guards']}.")
    return "\n".join(lines)


def main() -> None:
    args = parse_args(__doc__, requests=600, concurrency=(1, 8))
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM also stops the children
    per_round = max(1, args.requests // args.rounds)
    report: dict[str, Any] = {"per_round": per_round, "levels": []}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guardproxy-chain-") as tmp:
        with services(Path(tmp)) as urls:
            for concurrency in args.concurrency:
                results = asyncio.run(measure(urls, concurrency, per_round, args.rounds))
                report["levels"].append(
                    {"concurrency": concurrency, "targets": level_rows(results)}
                )
        report["chain_guards"] = chain_guards(Path(tmp) / "chain" / "audit.jsonl")
    report["wall_s"] = round(time.perf_counter() - started, 1)
    emit(report, markdown(report), args.json)


if __name__ == "__main__":
    main()
