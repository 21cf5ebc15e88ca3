"""Statistics and the markdown report for bench.overhead: pure functions over measured batches."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

# floor: a bare uvicorn + httpx forwarder (bench/floor.py), what any Python proxy pays here.
TARGETS = ("direct", "floor", "proxy-off", "proxy-on")
MISSING = "—"


@dataclass
class Batch:  # one round against one target
    latencies_ms: list[float] = field(default_factory=list)
    overheads_ms: list[float] = field(default_factory=list)
    checks: set[str] = field(default_factory=set)
    errors: int = 0
    elapsed_s: float = 0.0


def ms(value: float | None, digits: int = 2) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def added_cell(median: float, span: list[float]) -> str:
    """A median over rounds with its range: `+1.17 [+0.97..+1.33]`."""
    low, high = span
    return f"{median:+.2f} [{low:+.2f}..{high:+.2f}]"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN when there are no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def summarize(batches: list[Batch], direct: list[Batch]) -> dict[str, Any]:
    """Pooled percentiles per target; "added" pairs each round with that round's direct run."""
    latencies = [v for b in batches for v in b.latencies_ms]
    overheads = [v for b in batches for v in b.overheads_ms]
    added = [
        percentile(b.latencies_ms, 50) - percentile(d.latencies_ms, 50)
        for b, d in zip(batches, direct, strict=True)
    ]
    return {
        "requests": len(latencies) + sum(b.errors for b in batches),
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "rps": len(latencies) / sum(b.elapsed_s for b in batches),
        "errors": sum(b.errors for b in batches),
        "added_p50_ms": statistics.median(added),
        "added_p50_range_ms": [min(added), max(added)],
        "overhead_header_p50_ms": percentile(overheads, 50) if overheads else None,
        "checks": sorted({c for b in batches for c in b.checks}),
    }


def markdown(report: dict[str, Any]) -> str:
    """Machine note, one table row per (concurrency, target), then the headline lines."""
    lines = [
        f"Machine: {report['machine']['platform']}, os.cpu_count()={report['machine']['cpus']}, "
        f"Python {report['machine']['python']}. The load generator, both fakes and both proxies "
        "share these cores, so absolute numbers are pessimistic; compare rows, not machines.",
        "",
        "| c | target | requests | p50 ms | p95 ms | p99 ms | RPS | errors | added p50 vs direct "
        "(median of rounds [min..max]) | overhead header p50 ms | input/output checks |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in report["levels"]:
        for name, row in level["targets"].items():
            added = added_cell(row["added_p50_ms"], row["added_p50_range_ms"])
            checks = ", ".join(row["checks"]) or MISSING
            lines.append(
                f"| {level['concurrency']} | {name} | {row['requests']} | {row['p50_ms']:.2f} "
                f"| {row['p95_ms']:.2f} | {row['p99_ms']:.2f} | {row['rps']:.0f} | {row['errors']} "
                f"| {MISSING if name == 'direct' else added} "
                f"| {ms(row['overhead_header_p50_ms'], 3)} | {checks} |"
            )
    return "\n".join([*lines, "", *headlines(report)]) + "\n"


def headlines(report: dict[str, Any]) -> list[str]:
    """The numbers to quote: added p50 vs direct, and the proxy's own overhead header."""
    lines = []
    for level in report["levels"]:
        off, on = level["targets"]["proxy-off"], level["targets"]["proxy-on"]
        floor = level["targets"]["floor"]
        lines.append(
            f"- c={level['concurrency']}: a bare uvicorn+httpx forwarder adds "
            f"{floor['added_p50_ms']:+.2f} ms p50; "
            f"pure proxying adds {off['added_p50_ms']:+.2f} ms p50 "
            f"(self-reported {ms(off['overhead_header_p50_ms'], 3)} ms); with input+output guard "
            f"round trips to an instant fake it adds {on['added_p50_ms']:+.2f} ms p50 "
            f"(self-reported {ms(on['overhead_header_p50_ms'], 3)} ms)."
        )
    return lines
