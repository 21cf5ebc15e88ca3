"""Blocks per category over time, as a small inline SVG (stacked bars, one per bucket), with
a text equivalent for screen readers. Rendered on the server: the page needs no chart library."""

from __future__ import annotations

from markupsafe import Markup, escape

from guardproxy.audit.query import BlockSeries

WIDTH, HEIGHT, LEGEND = 720, 140, 18
# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000")


def block_chart(series: BlockSeries) -> Markup:
    if not series.counts:
        return Markup('<p class="muted">No blocks in the last 24 hours.</p>')
    totals = [sum(c[i] for c in series.counts.values()) for i in range(series.buckets)]
    scale = (HEIGHT - LEGEND - 4) / max(max(totals), 1)
    bar = WIDTH / series.buckets
    parts = []
    for index in range(series.buckets):
        base = float(HEIGHT - LEGEND)
        when = (series.start + series.bucket * index).strftime("%Y-%m-%d %H:%M UTC")
        for number, (category, counts) in enumerate(sorted(series.counts.items())):
            if not counts[index]:
                continue
            height = counts[index] * scale
            base -= height
            parts.append(
                f'<rect x="{index * bar + 1:.1f}" y="{base:.1f}" width="{bar - 2:.1f}" '
                f'height="{height:.1f}" fill="{COLOURS[number % len(COLOURS)]}">'
                f"<title>{escape(category)}: {counts[index]} at {when}</title></rect>"
            )
    legend = [
        f'<tspan fill="{COLOURS[n % len(COLOURS)]}">■</tspan> {escape(c)} ({sum(v)}) '
        for n, (c, v) in enumerate(sorted(series.counts.items()))
    ]
    summary = ", ".join(f"{c}: {sum(v)}" for c, v in sorted(series.counts.items()))
    return Markup(
        f'<svg role="img" viewBox="0 0 {WIDTH} {HEIGHT}" class="chart" '
        f'aria-label="Blocks per category, last 24 hours: {escape(summary)}">'
        f"{''.join(parts)}"
        f'<text x="0" y="{HEIGHT - 4}" font-size="12">{"".join(legend)}</text></svg>'
    )
