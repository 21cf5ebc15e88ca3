"""Streamed answers: time to first token and total time, direct vs guardproxy's stream modes vs a
LiteLLM proxy whose guardrail asks the same fake guard.

Every target streams the same fake answer (TTFT 400 ms, 300 tokens at 50 tokens/s) and every
guard call takes 100 ms. One guardproxy serves three tenants, one per input/output mode. Requests
are sequential; each round sends one to every target in a fresh random order.
Run from the repository root: ``python -m bench.streaming [--requests N] [--json OUT]
[--skip-litellm]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import litellm_target
from bench.common import (
    HOST,
    Children,
    children,
    emit,
    free_port,
    hashed_key,
    write_guardproxy_config,
)
from bench.stream_timing import stream_one
from bench.streaming_report import Sample, guard_calls, markdown, summarize

TTFT_S, TOKEN_INTERVAL_S, REPLY_TOKENS, GUARD_DELAY_S = 0.4, 0.02, 300, 0.1
# target -> (input policy, output policy); the tenant is named after the target, "+" -> "-".
GUARDPROXY_TARGETS = {
    "sequential+buffer": ({"mode": "sequential"}, {"stream": "buffer"}),
    "sequential+chunked": ({"mode": "sequential"}, {"stream": "chunked"}),
    "parallel+chunked": ({"mode": "parallel"}, {"stream": "chunked"}),
}
LITELLM = "litellm-proxy"
SKIPPED = "skipped (--skip-litellm)"
WARMUP_REQUESTS = 2
LITELLM_GUARDRAIL = (
    f"`{litellm_target.GUARDRAIL_CLASS}` (bench/litellm_guard.py), a "
    "litellm.integrations.custom_guardrail.CustomGuardrail with mode [pre_call, post_call]. "
    "pre_call: `async_pre_call_hook` judges the last user turn before the LLM is called. "
    "Stream: `async_post_call_streaming_iterator_hook` (the hook LiteLLM chains in "
    "litellm/proxy/utils.py `ProxyLogging.async_post_call_streaming_iterator_hook`) collects "
    "every chunk, judges prompt + whole answer in one guard call, then yields the chunks "
    "unchanged: the equivalent of guardproxy's sequential+buffer."
)


@dataclass
class Target:
    url: str
    key: str = "sk-bench-direct"
    call_log: Path | None = None  # LiteLLM's guardrail appends one line per guard call


@dataclass
class Setup:
    targets: dict[str, Target] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    audit: Path | None = None


def tenant_name(target: str) -> str:
    return target.replace("+", "-")


def guardproxy_policies() -> list[dict[str, Any]]:
    return [
        {
            "tenant": tenant_name(name),
            "keys": [hashed_key(f"sk-bench-{tenant_name(name)}")],
            "guard": "nemotron",
            "upstream": "app",
            "input": {"enabled": True, **checks_in},
            "output": {"enabled": True, **checks_out},
        }
        for name, (checks_in, checks_out) in GUARDPROXY_TARGETS.items()
    ]


def start_fakes(group: Children, workdir: Path, ports: dict[str, int]) -> None:
    run = [sys.executable, "-m"]
    upstream = [f"--ttft-s={TTFT_S}", f"--token-interval-s={TOKEN_INTERVAL_S}"]
    upstream += [f"--reply-tokens={REPLY_TOKENS}"]
    guard = ["--protocol=nemotron-content-safety", f"--delay-s={GUARD_DELAY_S}"]
    for name, extra in (("upstream", upstream), ("guard", guard)):
        argv = [*run, f"tests.fakes.{name}", "--port", str(ports[name]), *extra]
        group.launch(argv, workdir / f"{name}.log", f"http://{HOST}:{ports[name]}/v1/models")


def start_guardproxy(group: Children, workdir: Path, ports: dict[str, int], setup: Setup) -> None:
    folder = workdir / "guardproxy"
    config = write_guardproxy_config(
        folder, ports["guard"], ports["upstream"], guardproxy_policies()
    )
    # Every request sends the same prompt and answer: without this the verdict cache would
    # answer all but the first, and the table would not show what a guard call costs.
    config.write_text(json.dumps({**json.loads(config.read_text()), "cache": {"enabled": False}}))
    serve = ["serve", "--config", str(config), "--host", HOST, "--port", str(ports["guardproxy"])]
    argv = [sys.executable, "-m", "guardproxy", *serve, "--log-level", "warning"]
    base = f"http://{HOST}:{ports['guardproxy']}"
    group.launch(argv, workdir / "guardproxy.log", f"{base}/healthz")
    setup.audit = folder / "audit.jsonl"
    for name in GUARDPROXY_TARGETS:
        key = f"sk-bench-{tenant_name(name)}"
        setup.targets[name] = Target(f"{base}/v1/chat/completions", key)


def start_litellm(group: Children, workdir: Path, ports: dict[str, int], setup: Setup) -> None:
    """Install (first run) and start LiteLLM; on failure record why instead of raising."""
    port, call_log = free_port(), workdir / "litellm-guard-calls.log"
    try:
        executable = litellm_target.ensure_installed(workdir / "litellm-install.log")
        config = litellm_target.write_config(workdir / "litellm", ports["upstream"])
        argv = litellm_target.command(executable, config, port)
        env = litellm_target.environment(ports["guard"], call_log)
        ready = f"http://{HOST}:{port}{litellm_target.READY_PATH}"
        log = workdir / "litellm.log"
        group.launch(argv, log, ready, env, litellm_target.READY_TIMEOUT_S)
    except litellm_target.LiteLLMUnavailable as exc:
        setup.unavailable[LITELLM] = str(exc)
        return
    except (RuntimeError, OSError) as exc:
        setup.unavailable[LITELLM] = "did not start: " + _last_line(str(exc))
        return
    call_log.touch()
    setup.targets[LITELLM] = Target(f"http://{HOST}:{port}/v1/chat/completions", call_log=call_log)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:200].replace("|", "/")


@contextmanager
def services(workdir: Path, with_litellm: bool) -> Iterator[Setup]:
    """Start the fakes, guardproxy and (optionally) LiteLLM; always stop every child."""
    ports = {name: free_port() for name in ("upstream", "guard", "guardproxy")}
    setup = Setup(
        targets={"direct": Target(f"http://{HOST}:{ports['upstream']}/v1/chat/completions")}
    )
    with children() as group:
        start_fakes(group, workdir, ports)
        start_guardproxy(group, workdir, ports, setup)
        if with_litellm:
            start_litellm(group, workdir, ports, setup)
        else:
            setup.unavailable[LITELLM] = SKIPPED
        yield setup


async def measured(client: httpx.AsyncClient, target: Target) -> Sample:
    """One request; for LiteLLM, the guard calls its guardrail logged meanwhile."""
    before = _line_count(target.call_log)
    sample = await stream_one(client, target.url, target.key)
    if target.call_log is not None:
        sample.guard_calls = _line_count(target.call_log) - before
    return sample


def _line_count(path: Path | None) -> int:
    return len(path.read_text().splitlines()) if path is not None and path.exists() else 0


async def measure(targets: dict[str, Target], rounds: int) -> dict[str, list[Sample]]:
    results: dict[str, list[Sample]] = {name: [] for name in targets}
    async with AsyncExitStack() as stack:
        clients = {
            name: await stack.enter_async_context(httpx.AsyncClient(trust_env=False, timeout=30))
            for name in targets
        }
        for name, target in targets.items():
            for _ in range(WARMUP_REQUESTS):
                await measured(clients[name], target)
        for _ in range(rounds):
            for name in random.sample(list(targets), k=len(targets)):
                results[name].append(await measured(clients[name], targets[name]))
    return results


def attach_audit(results: dict[str, list[Sample]], audit: Path | None) -> None:
    """Guard calls per guardproxy request, from the audit file written as the proxy stopped."""
    if audit is None or not audit.exists():
        return
    records = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    by_id = {r.get("request_id"): r for r in records}
    for name in GUARDPROXY_TARGETS:
        for sample in results.get(name, []):
            sample.audit = by_id.get(sample.request_id)
            sample.guard_calls = None if sample.audit is None else guard_calls(sample.audit)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="streamed requests per target")
    parser.add_argument("--json", type=Path, help="also write the full report here")
    parser.add_argument("--skip-litellm", action="store_true", help="leave LiteLLM out")
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("need --requests >= 1")
    return args


def code_version() -> str:
    """The commit under test, and how many files differ from it: others may be editing."""
    try:
        commit = _git("rev-parse", "--short", "HEAD").strip()
        changes = _git("status", "--porcelain").splitlines()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} + {len(changes)} uncommitted change(s)"


def _git(*args: str) -> str:
    repo = str(Path(__file__).resolve().parent.parent)
    argv = ["git", "-C", repo, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout


def build_report(results: dict[str, list[Sample]], setup: Setup, requests: int) -> dict[str, Any]:
    machine = {"platform": platform.platform(), "cpus": os.cpu_count()}
    machine["python"] = platform.python_version()
    machine["guardproxy"] = code_version()
    direct = summarize(results["direct"], None)
    targets = {name: summarize(samples, direct) for name, samples in results.items()}
    targets |= {name: {"unavailable": reason} for name, reason in setup.unavailable.items()}
    return {
        "machine": machine,
        "setup": {
            "ttft_ms": TTFT_S * 1000,
            "token_interval_ms": TOKEN_INTERVAL_S * 1000,
            "tokens": REPLY_TOKENS,
            "guard_ms": GUARD_DELAY_S * 1000,
            "requests": requests,
            "warmup": WARMUP_REQUESTS,
        },
        "targets": targets,
        "litellm_guardrail": LITELLM_GUARDRAIL,
        "samples": {name: [asdict(s) for s in samples] for name, samples in results.items()},
    }


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM also stops the children
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="guardproxy-bench-") as tmp:
        with services(Path(tmp), not args.skip_litellm) as setup:
            results = asyncio.run(measure(setup.targets, args.requests))
        attach_audit(results, setup.audit)  # after the proxy stopped: every record is written
    report = build_report(results, setup, args.requests)
    report["wall_s"] = round(time.perf_counter() - started, 1)
    emit(report, markdown(report), args.json)


if __name__ == "__main__":
    main()
