"""The `eval`, `replay` and `export-labels` commands, behind the CLI's argument parsing."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from guardproxy.config import Settings, load_settings
from guardproxy.errors import ConfigError
from guardproxy.lifecycle import replay, report
from guardproxy.lifecycle.datasets import LAYOUTS, load_examples
from guardproxy.lifecycle.evaluate import (
    EvalRun,
    changes,
    changes_markdown,
    compare,
    delta_markdown,
    evaluate,
    guards_never_run,
    judge_all,
    per_example,
)
from guardproxy.lifecycle.export_labels import export_labels
from guardproxy.policy.loader import load_candidate, load_policies
from guardproxy.policy.model import PolicySet, TenantPolicy


def add_eval(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = commands.add_parser("eval", help="score a tenant's policy on a labelled set")
    parser.add_argument("data", help="a .jsonl, .csv or .parquet file, or hf:NAME[:SPLIT]")
    parser.add_argument("--tenant", required=True)
    other = parser.add_mutually_exclusive_group()
    other.add_argument("--against", metavar="TENANT", help="compare with another tenant")
    other.add_argument("--policy", type=Path, help="compare with a candidate policy file")
    parser.add_argument("--out", type=Path, default=Path("eval-report"))
    parser.add_argument("--format", choices=["auto", *LAYOUTS], default="auto")
    parser.add_argument("--limit", type=int, help="only the first N examples")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cache", type=Path, help="the verdict file (default OUT/verdicts.jsonl)")
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=run_eval)
    return parser


def _tenant(policies: PolicySet, name: str) -> TenantPolicy:
    tenant = policies.tenants.get(name)
    if tenant is None:
        known = ", ".join(sorted(policies.tenants))
        raise ConfigError(f"unknown tenant {name!r}; known: {known}")
    return tenant


def load(config: Path) -> tuple[Settings, PolicySet, dict[str, str]]:
    env = dict(os.environ)
    settings = load_settings(config, env)
    return settings, load_policies(settings, env), env


def run_eval(args: argparse.Namespace) -> int:
    settings, policies, env = load(args.config)
    examples = load_examples(args.data, args.format, args.limit)
    cache = args.cache or args.out / "verdicts.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    run = EvalRun(settings, policies, args.concurrency, cache, not args.no_progress)
    runs = {args.tenant: _tenant(policies, args.tenant)}
    if args.against:
        runs[args.against] = _tenant(policies, args.against)
    elif args.policy:
        runs[args.policy.stem] = load_candidate(settings, env, args.policy)
    reports = {}
    for label, tenant in runs.items():
        outcomes = asyncio.run(judge_all(run, tenant, examples, label))
        reports[label] = evaluate(examples, outcomes, guards_never_run(tenant, examples))
        folder = args.out if len(runs) == 1 else args.out / label
        report.write(reports[label], folder, f"{label} on {args.data}")
        report.write_examples(per_example(examples, outcomes), folder)
        print(report.markdown(reports[label], f"{label} on {args.data}"))
        _say_resumed(label, reports[label]["latency_ms"]["cached"], len(examples), cache)
    if len(runs) == 2:
        (before, first), (after, second) = reports.items()
        delta = compare(first, second)
        (args.out / "compare.json").write_text(json.dumps(delta, indent=2) + "\n")
        changed = changes(first, second)
        (args.out / "changes.json").write_text(json.dumps(changed, indent=2) + "\n")
        table = delta_markdown(delta, before, after) + "\n" + changes_markdown(changed)
        (args.out / "compare.md").write_text(table)
        print(table)
    return 0


def _say_resumed(label: str, cached: int, total: int, cache: Path) -> None:
    if cached:
        print(f"{label}: {cached} of {total} examples resumed from the verdict file {cache}")


def add_replay(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = commands.add_parser("replay", help="judge stored traffic under a candidate policy")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--policy", type=Path, required=True, help="a tenant policy file")
    parser.add_argument("--since", help="ISO time (UTC unless it says otherwise)")
    parser.add_argument("--until", help="ISO time, exclusive")
    parser.add_argument("--out", type=Path, default=Path("replay-diff.json"))
    parser.add_argument("--state", type=Path, help="progress, for resuming (default OUT.state)")
    parser.add_argument("--trail", type=Path, help="a JSON-lines trail instead of the config's")
    parser.add_argument("--max-rps", type=float, help="guard calls per second, at most")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(run=run_replay)
    return parser


def run_replay(args: argparse.Namespace) -> int:
    settings, policies, env = load(args.config)
    tenant = _tenant(policies, args.tenant)
    candidate = load_candidate(settings, env, args.policy)
    stored = replay.load_exchanges(settings, args.tenant, args.trail)
    why = replay.why_nothing(tenant, stored)
    if why is not None:
        print(why, file=sys.stderr)
    if not stored.exchanges:
        return 1
    exchanges = replay.in_window(stored.exchanges, args.since, args.until)
    state = args.state or args.out.with_name(args.out.name + ".state")
    earlier = replay.resumed(state, exchanges)
    if earlier:
        print(f"resuming: {earlier} of {len(exchanges)} exchanges were judged before ({state})")
    run = replay.ReplayRun(
        settings, policies, candidate, state, args.max_rps, args.concurrency, not args.no_progress
    )
    try:
        done = asyncio.run(replay.replay(run, exchanges))
    except KeyboardInterrupt:
        print(f"interrupted; progress is in {state}: run the same command to resume")
        return 130
    ids = {e.request_id for e in exchanges}
    entries = [entry for rid, entry in done.items() if rid in ids]
    result = replay.diff(entries, replay.guards_never_run(candidate))
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(replay.summary(result))
    print(
        f"{len(exchanges)} exchanges judged again ({earlier} resumed from {state}); "
        f"the full diff is in {args.out}"
    )
    return 0


def add_export_labels(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "export-labels", help="reviewers' labelled decisions as a labelled set for eval"
    )
    parser.add_argument("--tenant", required=True)
    parser.add_argument(
        "--since", type=_since, help="decisions from this ISO time (UTC unless it says)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the .jsonl file to write")
    parser.add_argument(
        "--actor", default=None, help="who the access log names (default: this user's login)"
    )
    parser.set_defaults(run=run_export_labels)
    return parser


def _since(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO time: {value!r}") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_export_labels(args: argparse.Namespace) -> int:
    settings, policies, _ = load(args.config)
    _tenant(policies, args.tenant)
    if not settings.audit.database:
        raise ConfigError("export-labels reads the audit database: set audit.database")
    actor = args.actor or f"cli:{getpass.getuser()}"
    exported = asyncio.run(export_labels(settings.audit.database, args.tenant, args.since, actor))
    exported.write(args.out)
    print(exported.summary(args.out))
    return 0
