"""`guardproxy eval`'s report: report.json, report.md and, with matplotlib (the `eval` extra),
a confusion matrix and per-category F1 bars as PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from guardproxy.lifecycle.scores import Confusion
from guardproxy.pipeline.judging import not_run_note

logger = logging.getLogger(__name__)
COLUMNS = ("n", "support", "precision", "recall", "f1", "fpr")
UNDEFINED = "undefined"  # a score whose denominator is zero (scores.py)
LISTED_IDS = 50  # ids named in report.md per list; examples.jsonl has every example


def build(
    overall: Confusion,
    per_category: dict[str, Confusion],
    latencies: list[float],
    guard_calls: int,
    errors: int,
    cached: int = 0,
) -> dict[str, Any]:
    """`latencies`: every judged example's, those from the verdict file (`cached`) as the
    guard took when first asked, so a fully cached rerun still reports them."""
    return {
        "overall": overall.view() | {"errors": errors},
        "per_category": {name: c.view() for name, c in per_category.items()},
        "latency_ms": _percentiles(latencies) | {"cached": cached},
        "guard_calls": guard_calls,
    }


def cell(value: object) -> str:
    return UNDEFINED if value is None else str(value)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)

    def at(q: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[min(int(q * len(ordered)), len(ordered) - 1)], 2)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "n": len(ordered)}


def markdown(report: dict[str, Any], title: str) -> str:
    header = "| | " + " | ".join(COLUMNS) + " |"
    lines = [f"# {title}", "", header, "|---" * (len(COLUMNS) + 1) + "|"]
    rows = {"overall": report["overall"], **report["per_category"]}
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row.get(c)) for c in COLUMNS) + " |")
    latency = report["latency_ms"]
    lines += [
        "",
        f"Guard calls: {report['guard_calls']}. Errors (not scored): "
        f"{report['overall']['errors']}. Latency p50 {cell(latency['p50'])} ms, "
        f"p90 {cell(latency['p90'])} ms, p99 {cell(latency['p99'])} ms"
        f"{_cached(latency)}.",
        f"Support: the examples labelled with the category ({UNDEFINED}: a score over none).",
    ]
    if report.get("not_run"):
        lines.append(f"Not scored: {not_run_note(report['not_run'])}.")
    for kind, found in report.get("wrong", {}).items():
        lines.append(f"{kind.replace('_', ' ').capitalize()}s ({len(found)}): {ids(found)}")
    return "\n".join(lines) + "\n"


def ids(found: list[str]) -> str:
    """Up to `LISTED_IDS` example ids, and how many more there are."""
    shown = ", ".join(found[:LISTED_IDS]) or "none"
    more = len(found) - LISTED_IDS
    return shown + (f" and {more} more (examples.jsonl)" if more > 0 else "")


def write_examples(rows: list[dict[str, Any]], folder: Path) -> Path:
    """Each example's outcome, one JSON line each (evaluate.per_example)."""
    path = folder / "examples.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def _cached(latency: dict[str, Any]) -> str:
    cached = latency.get("cached", 0)
    if not cached:
        return ""
    return f" ({cached} of {latency['n']} from the verdict file, as first measured)"


def write(report: dict[str, Any], folder: Path, title: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "report.md").write_text(markdown(report, title))
    written = [folder / "report.json", folder / "report.md"]
    try:
        written += plots(report, folder)
    except ImportError:
        logger.warning("no plots: matplotlib is not installed (pip install 'guardproxy[eval]')")
    return written


def plots(report: dict[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    o = report["overall"]
    figure, axes = plt.subplots(figsize=(4, 3.5))
    cells = [[o["tn"], o["fp"]], [o["fn"], o["tp"]]]
    axes.imshow(cells, cmap="Blues")
    darkest = max(max(row) for row in cells)
    for row in range(2):
        for column in range(2):
            value = cells[row][column]
            colour = "white" if darkest and value > darkest / 2 else "black"
            axes.text(column, row, str(value), ha="center", va="center", color=colour)
    axes.set_xticks([0, 1], ["allowed", "blocked"])
    axes.set_yticks([0, 1], ["safe", "unsafe"])
    axes.set_xlabel("policy")
    axes.set_ylabel("label")
    axes.set_title("Confusion matrix")
    figure.tight_layout()
    figure.savefig(folder / "confusion.png", dpi=120)
    plt.close(figure)

    names = list(report["per_category"])
    figure, axes = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    scores = [report["per_category"][n]["f1"] for n in names]
    axes.barh(names, [f1 or 0.0 for f1 in scores], color="#0072B2")
    for row, f1 in enumerate(scores):
        if f1 is None:  # no bar for a score that was never measured, and say so
            axes.text(0.01, row, UNDEFINED, va="center", color="#555555")
    axes.set_xlim(0, 1)
    axes.set_xlabel("F1")
    axes.set_title("F1 per category")
    axes.invert_yaxis()
    figure.tight_layout()
    figure.savefig(folder / "f1_per_category.png", dpi=120)
    plt.close(figure)
    return [folder / "confusion.png", folder / "f1_per_category.png"]
