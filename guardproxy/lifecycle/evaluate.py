"""`guardproxy eval DATA --tenant T [--against T2 | --policy NEW.yaml]`: a labelled set through
a tenant's real policy and guard, scored; with a second policy, the two side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from guardproxy.config import Settings
from guardproxy.errors import GuardproxyError
from guardproxy.lifecycle import report
from guardproxy.lifecycle.datasets import Example
from guardproxy.lifecycle.judge import Judge, Outcome
from guardproxy.lifecycle.scores import score
from guardproxy.lifecycle.verdicts import VerdictFile
from guardproxy.media.fetch import ImageFetcher
from guardproxy.pipeline.judging import Case, guards_not_run, tool_turns
from guardproxy.policy.model import PolicySet, TenantPolicy

DELTA_COLUMNS = ("precision", "recall", "f1", "fpr")
WRONG = ("false_positive", "false_negative")


@dataclass(frozen=True)
class EvalRun:
    settings: Settings
    policies: PolicySet
    concurrency: int = 8
    cache: Path | None = None  # the verdict file; None: judge everything again
    progress: bool = True


async def judge_all(
    run: EvalRun, tenant: TenantPolicy, examples: Sequence[Example], label: str
) -> list[Outcome]:
    """Every example, at most `concurrency` at a time, in the input's order."""
    limit = asyncio.Semaphore(run.concurrency)
    verdicts = VerdictFile(run.cache)
    bar = tqdm(total=len(examples), desc=label, unit="ex", disable=not run.progress)
    try:
        async with httpx.AsyncClient() as client, ImageFetcher() as fetcher:
            judge = Judge(run.settings, run.policies, tenant, client, fetcher, verdicts)

            async def one(example: Example) -> Outcome:
                async with limit:
                    try:
                        outcome = await judge.judge(
                            example.prompt, example.response, example.image, example.tools
                        )
                    except GuardproxyError as exc:  # a bad image, say: counted, not fatal
                        outcome = Outcome("error", (), None, 0, str(exc))
                bar.update()
                return outcome

            return list(await asyncio.gather(*(one(e) for e in examples)))
    finally:
        bar.close()
        verdicts.close()


def per_example(examples: Sequence[Example], outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """Each example's expected and decided outcome, and which cell of the confusion it is."""
    return [
        {
            "id": example.id,
            "expected": "unsafe" if example.unsafe else "safe",
            "decided": outcome.decided or outcome.action,
            "categories": list(outcome.categories),
            "result": _result(example, outcome),
        }
        for example, outcome in zip(examples, outcomes, strict=True)
    ]


def _result(example: Example, outcome: Outcome) -> str:
    if outcome.error is not None:
        return "error"
    correct = "true" if example.unsafe == outcome.positive else "false"
    return f"{correct}_{'positive' if outcome.positive else 'negative'}"


def wrong(rows: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """The ids of the examples the policy got wrong, by how."""
    return {kind: [r["id"] for r in rows if r["result"] == kind] for kind in WRONG}


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[str]]:
    """Which examples the second policy newly gets wrong, by how, and which it now gets right."""
    old, new = before["wrong"], after["wrong"]
    became = {f"became_{kind}": [i for i in new[kind] if i not in set(old[kind])] for kind in WRONG}
    was_wrong = [i for kind in WRONG for i in old[kind]]
    still = {i for kind in WRONG for i in new[kind]}
    return became | {"now_right": [i for i in was_wrong if i not in still]}


def changes_markdown(changed: dict[str, list[str]]) -> str:
    return "\n".join(f"- {name}: {report.ids(found)}" for name, found in changed.items()) + "\n"


def guards_never_run(tenant: TenantPolicy, examples: Sequence[Example]) -> tuple[str, ...]:
    """The tenant's guards that no example gives a turn of theirs (a set without tool results
    never calls a guard limited to `turns: [tool]`)."""
    cases = (Case(e.prompt, turns=tool_turns(e.tools, "tool")) for e in examples)
    return guards_not_run(tenant, frozenset().union(*(case.kinds for case in cases)))


def evaluate(
    examples: Sequence[Example], outcomes: Sequence[Outcome], not_run: Sequence[str] = ()
) -> dict[str, Any]:
    """The scores, and `not_run` where there are some: the guards the set never called
    (`guards_never_run`)."""
    overall, per_category = score(examples, outcomes)
    timed = [o for o in outcomes if o.latency_ms is not None and o.error is None]
    latencies = [o.latency_ms for o in timed if o.latency_ms is not None]
    cached = sum(not o.fresh for o in timed)
    calls = sum(o.fresh for o in outcomes)
    errors = sum(o.error is not None for o in outcomes)
    built = report.build(overall, per_category, latencies, calls, errors, cached)
    built |= {"wrong": wrong(per_example(examples, outcomes))}
    return built | ({"not_run": list(not_run)} if not_run else {})


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per row (overall, then each category either run has), each score's change."""
    rows = {"overall": (before["overall"], after["overall"])}
    for name in sorted({*before["per_category"], *after["per_category"]}):
        empty = dict.fromkeys(DELTA_COLUMNS, None)
        rows[name] = (
            before["per_category"].get(name, empty),
            after["per_category"].get(name, empty),
        )
    return {
        name: {c: _change(b1[c], b2[c]) for c in DELTA_COLUMNS} for name, (b1, b2) in rows.items()
    }


def _change(before: float | None, after: float | None) -> float | None:
    """Undefined where either run's score is: a change from nothing is not a number."""
    return None if before is None or after is None else round(after - before, 4)


def delta_markdown(delta: dict[str, Any], before: str, after: str) -> str:
    lines = [f"# {after} against {before}", "", "| | Δ precision | Δ recall | Δ F1 | Δ FPR |"]
    lines.append("|---|---|---|---|---|")
    for name, row in delta.items():
        lines.append(f"| {name} | " + " | ".join(_signed(row[c]) for c in DELTA_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _signed(change: float | None) -> str:
    return report.UNDEFINED if change is None else f"{change:+.4f}"
