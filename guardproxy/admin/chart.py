"""The reviewer page's charts as small inline SVGs, rendered on the server (no chart library).

One row per category (or tenant): its name, a bar per hour, and its number written out, so
two dozen categories read without colours to tell apart or a pointer to hover with. Each
SVG carries a text equivalent for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from guardproxy.audit.query import BlockSeries, TenantTraffic

LABEL_W, BARS_W, VALUE_W = 230, 400, 90
ROW_H, AXIS_H = 20, 16
WIDTH = LABEL_W + BARS_W + VALUE_W
BAR_COLOUR = "#0072B2"  # Okabe-Ito blue: readable with the common colour-vision deficiencies
RATE_COLOUR = "#D55E00"


def block_chart(series: BlockSeries) -> Markup:
    if not series.counts:
        return Markup('<p class="muted">No blocks in the last 24 hours.</p>')
    ranked = sorted(series.counts.items(), key=lambda item: (-sum(item[1]), item[0]))
    peak = max(max(counts) for _, counts in ranked)
    rows = [
        _row(n, name, [c / peak for c in counts], f"{sum(counts)}", BAR_COLOUR)
        for n, (name, counts) in enumerate(ranked)
    ]
    summary = ", ".join(f"{name}: {sum(counts)}" for name, counts in ranked)
    label = f"Blocks per category, last 24 hours: {summary} (peak {peak} an hour)"
    return _svg(label, rows, _axis(series.start, series.bucket, series.buckets, len(ranked)))


def traffic_chart(traffic: dict[str, TenantTraffic], start: datetime, hours: int) -> Markup:
    """Per tenant: the block rate in each hour as bars, then the day's decisions, block rate
    and mean guard time written out."""
    if not traffic:
        return Markup('<p class="muted">No decisions in the last 24 hours.</p>')
    rows, said = [], []
    for n, (tenant, shown) in enumerate(traffic.items()):
        rates = [shown.block_rate(i) or 0.0 for i in range(hours)]
        figures = f"{_percent(shown.block_rate())} · {_ms(shown.mean_guard_ms())}"
        rows.append(_row(n, tenant or "(none)", rates, figures, RATE_COLOUR))
        said.append(
            f"{tenant or '(none)'}: {sum(shown.requests)} decisions, "
            f"{_percent(shown.block_rate())} blocked, guard {_ms(shown.mean_guard_ms())}"
        )
    label = "Block rate per hour and mean guard time per tenant, last 24 hours: " + "; ".join(said)
    return _svg(label, rows, _axis(start, timedelta(hours=1), hours, len(rows)))


def _row(n: int, name: str, heights: Sequence[float], value: str, colour: str) -> str:
    """Row `n`: the name, one bar per bucket (heights 0..1), and `value` written out."""
    top, bar = n * ROW_H, BARS_W / max(len(heights), 1)
    bars = "".join(
        f'<rect x="{LABEL_W + i * bar + 1:.1f}" y="{top + (ROW_H - 4) * (1 - h) + 2:.1f}" '
        f'width="{bar - 2:.1f}" height="{(ROW_H - 4) * h:.1f}" fill="{colour}"/>'
        for i, h in enumerate(heights)
        if h > 0
    )
    baseline = top + ROW_H - 2
    return (
        f'<g class="chart-row"><text x="{LABEL_W - 6}" y="{top + 14}" text-anchor="end" '
        f'font-size="12">{escape(_clip(name))}<title>{escape(name)}</title></text>'
        f'<line x1="{LABEL_W}" x2="{LABEL_W + BARS_W}" y1="{baseline}" y2="{baseline}" '
        f'stroke="#ccc"/>{bars}'
        f'<text x="{LABEL_W + BARS_W + 6}" y="{top + 14}" font-size="12" class="chart-value">'
        f"{escape(value)}</text></g>"
    )


def _axis(start: datetime, bucket: timedelta, buckets: int, rows: int) -> str:
    """Hour marks under the bars: the first, every sixth, and the last bucket."""
    top, bar = rows * ROW_H + 12, BARS_W / max(buckets, 1)
    marks = sorted({0, *range(6, buckets, 6), buckets - 1})
    return "".join(
        f'<text x="{LABEL_W + i * bar:.1f}" y="{top}" font-size="10" fill="#555">'
        f"{(start + bucket * i).strftime('%H:%M')}</text>"
        for i in marks
    )


def _svg(label: str, rows: list[str], axis: str) -> Markup:
    height = len(rows) * ROW_H + AXIS_H
    return Markup(
        f'<svg role="img" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'class="chart" aria-label="{escape(label)}">{"".join(rows)}{axis}</svg>'
    )


def _clip(name: str, size: int = 34) -> str:
    return name if len(name) <= size else name[: size - 1] + "…"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _ms(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.0f} ms"
