"""Statistics and the markdown report for bench.tail: pure functions over measured rounds."""

from __future__ import annotations

import json
import statistics
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.report import Batch, percentile

TAIL_BUDGET = 1.3  # the proxy's p99/p50 may be at most this multiple of direct's
TRAIL_FAMILIES = ("guardproxy_audit_flush_seconds", "guardproxy_audit_queue_depth")


def tail_ratio(batch: Batch) -> float:
    return percentile(batch.latencies_ms, 99) / percentile(batch.latencies_ms, 50)


def summarize(results: dict[str, list[Batch]], direct: str) -> dict[str, dict[str, Any]]:
    return {name: target_row(batches, results[direct]) for name, batches in results.items()}


def target_row(batches: list[Batch], direct: list[Batch]) -> dict[str, Any]:
    """Medians over rounds; the ratio of ratios pairs each round with direct's same round."""
    over = [tail_ratio(b) / tail_ratio(d) for b, d in zip(batches, direct, strict=True)]
    median = statistics.median(over)
    return {
        "requests": sum(len(b.latencies_ms) + b.errors for b in batches),
        "p50_ms": statistics.median(percentile(b.latencies_ms, 50) for b in batches),
        "p99_ms": statistics.median(percentile(b.latencies_ms, 99) for b in batches),
        "tail_ratio": statistics.median(tail_ratio(b) for b in batches),
        "ratio_of_ratios": median,
        "ratio_of_ratios_range": [min(over), max(over)],
        "within_budget": median <= TAIL_BUDGET,
        "rps": statistics.median(len(b.latencies_ms) / b.elapsed_s for b in batches),
        "errors": sum(b.errors for b in batches),
    }


def trail_metrics(exposition: str) -> dict[str, float]:
    """The trail's flush histogram and queue gauge from /metrics; empty if not exposed."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name.startswith(TRAIL_FAMILIES)
        for sample in family.samples
        if not sample.name.endswith("_bucket")
    }


def app_split(trail: list[str], skip: int) -> dict[str, float]:
    """From the audit trail (after `skip` warm-up records): the app's own time to the record
    against its waits for the guard and the upstream, at p50 and among the slowest 1 %."""
    records = [json.loads(line) for line in trail[skip:] if line.strip()]
    totals = [r["total_ms"] for r in records]
    waits = [sum(_waits(r)) for r in records]
    own = [t - w for t, w in zip(totals, waits, strict=True)]
    cut = percentile(totals, 99)
    slow = [(t, w) for t, w in zip(totals, waits, strict=True) if t >= cut]
    return {
        "records": len(records),
        "total_p50_ms": percentile(totals, 50),
        "total_p99_ms": cut,
        "own_p50_ms": percentile(own, 50),
        "own_p99_ms": percentile(own, 99),
        "slowest_wait_share": statistics.median(w / t for t, w in slow) if slow else 0.0,
    }


def _waits(record: dict[str, Any]) -> list[float]:
    checks = (record["input"].get("latency_ms"), record["output"].get("latency_ms"))
    return [w for w in (*checks, record.get("upstream_ms")) if w is not None]


def markdown(report: dict[str, Any]) -> str:
    plan, machine = report["plan"], report["machine"]
    lines = [
        f"Machine: {machine['platform']}, {machine['cpus']} CPUs shared by the load generator, "
        f"both fakes and every proxy. c={plan['concurrency']}, {plan['rounds']} rounds of "
        f"{plan['per_round']} requests per target; medians over rounds.",
        "",
        *latency_table(report["targets"]),
        "",
        *attribution_table(report["inside"]),
        "",
        *split_table(report["inside"]),
        "",
        *trail_lines(report["inside"]),
    ]
    return "\n".join(lines) + "\n"


def latency_table(targets: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| target | p50 ms | p99 ms | p99/p50 | ÷ direct's (median [min..max]) "
        f"| ≤ {TAIL_BUDGET} | RPS | errors |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, row in targets.items():
        low, high = row["ratio_of_ratios_range"]
        over = f"{row['ratio_of_ratios']:.2f} [{low:.2f}..{high:.2f}]"
        verdict = "yes" if row["within_budget"] else "no"
        lines.append(
            f"| {name} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['tail_ratio']:.2f} "
            f"| {over} | {verdict} | {row['rps']:.0f} | {row['errors']} |"
        )
    return lines


def attribution_table(inside: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| target | window s | CPU % | invol. switches | lag p99 / max ms | stalls >10 / >50 ms "
        "| stall ms (off-CPU) | GC count g0/g1/g2 | GC ms total (max) g0/g1/g2 "
        "| GC ms in stalls | flushes (lines max) | flush ms total (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, found in inside.items():
        if "probes" in found:
            lines.append(attribution_row(name, found["probes"]))
    for name, found in inside.items():
        lines.append(attribution_row(f"load generator, {name}", found["loadgen"]))
    return lines


def attribution_row(name: str, probes: dict[str, Any]) -> str:
    lag, gc, flush = probes["lag"], probes["gc"], probes["flush"]
    cpu = 100 * probes["cpu_s"] / probes["window_s"] if probes["window_s"] else 0.0
    counts = "/".join(str(gc[g]["count"]) for g in "012")
    pauses = "/".join(f"{gc[g]['total_ms']:.0f} ({gc[g]['max_ms']:.1f})" for g in "012")
    return (
        f"| {name} | {probes['window_s']:.1f} | {cpu:.0f} "
        f"| {probes['context_switches']['involuntary']} "
        f"| {lag['p99_ms']:.1f} / {lag['max_ms']:.1f} | {lag['over_10ms']} / {lag['over_50ms']} "
        f"| {lag['stall_ms']:.0f} ({lag['stall_ms_off_cpu']:.0f}) | {counts} | {pauses} "
        f"| {lag['gc_ms_inside_stalls']:.0f} | {flush['batches']} ({flush['lines_max']}) "
        f"| {flush['total_ms']:.0f} ({flush['max_ms']:.1f}) |"
    )


def split_table(inside: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| target | app total p50 / p99 ms | app own p50 / p99 ms | waits share of slowest 1 % |",
        "|---|---:|---:|---:|",
    ]
    for name, found in inside.items():
        if "split" in found:
            split = found["split"]
            lines.append(
                f"| {name} | {split['total_p50_ms']:.1f} / {split['total_p99_ms']:.1f} "
                f"| {split['own_p50_ms']:.1f} / {split['own_p99_ms']:.1f} "
                f"| {100 * split['slowest_wait_share']:.0f} % |"
            )
    return lines


def trail_lines(inside: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, found in inside.items():
        if "metrics" not in found:
            continue
        metrics = found["metrics"]
        shown = ", ".join(f"{k}={v:g}" for k, v in metrics.items()) or "not exposed by this build"
        lines.append(f"- {name} /metrics trail: {shown}")
    return lines
