"""The reviewer page's charts: two dozen categories, each named and counted in plain text
inside the drawing, on rows that do not overlap, with nothing left to hover for."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from itertools import pairwise

from guardproxy.admin.chart import block_chart, traffic_chart
from guardproxy.audit.query import BlockSeries, TenantTraffic

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 12, 2, 0, tzinfo=UTC)
CATEGORIES = [f"S{n}: Category number {n}" for n in range(1, 25)]


def drawn(markup: str) -> ET.Element:
    return ET.fromstring(str(markup).replace("<svg ", f'<svg xmlns="{SVG[1:-1]}" ', 1))


def rows_of(svg: ET.Element) -> list[tuple[str, str, float]]:
    """Each row's visible label, its value as written, and the label's baseline."""
    found = []
    for row in svg.iter(f"{SVG}g"):
        label, value = row.findall(f"{SVG}text")
        found.append(((label.text or "").strip(), value.text or "", float(label.get("y", 0))))
    return found


def test_two_dozen_categories_are_each_named_and_counted_on_their_own_row() -> None:
    counts = {name: [n % 5] * 24 for n, name in enumerate(CATEGORIES, 1)}
    svg = drawn(block_chart(BlockSeries(START, timedelta(hours=1), counts)))
    rows = rows_of(svg)
    assert sorted(label for label, _, _ in rows) == sorted(CATEGORIES)
    assert {label: value for label, value, _ in rows} == {
        name: str(sum(c)) for name, c in counts.items()
    }
    baselines = [y for _, _, y in rows]
    assert all(b - a >= 16 for a, b in pairwise(baselines))
    height = float((svg.get("viewBox") or "").split()[3])
    assert baselines[-1] < height
    most = {CATEGORIES[n - 1] for n in (4, 9, 14, 19, 24)}  # ranked by their count
    assert {label for label, _, _ in rows[:5]} == most


def test_a_long_category_name_is_shortened_in_the_row_and_whole_in_its_title() -> None:
    name = "Needlessly long category name that would run into the bars"
    svg = drawn(block_chart(BlockSeries(START, timedelta(hours=1), {name: [1] * 24})))
    label = next(svg.iter(f"{SVG}text"))
    assert (label.text or "").endswith("…")
    assert label.find(f"{SVG}title") is not None
    assert label.find(f"{SVG}title").text == name  # type: ignore[union-attr]


def test_each_tenant_shows_its_block_rate_and_mean_guard_time_in_writing() -> None:
    hours = 24
    traffic = {
        "acme": TenantTraffic([10] * hours, [1] * hours, [50.0] * hours),
        "": TenantTraffic([4] + [0] * (hours - 1), [0] * hours, [8.0] + [0.0] * (hours - 1)),
    }
    svg = drawn(traffic_chart(traffic, START, hours))
    assert [(label, value) for label, value, _ in rows_of(svg)] == [
        ("acme", "10.0% · 5 ms"),
        ("(none)", "0.0% · 2 ms"),
    ]
    assert "acme: 240 decisions, 10.0% blocked, guard 5 ms" in (svg.get("aria-label") or "")
