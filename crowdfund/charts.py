"""Server-side SVG charts: coordinates computed here, drawn by a Jinja macro,
so the same chart works in pages and PDFs without a script. Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    points: str  # "x,y x,y ..." for <polyline>
    x_labels: list[tuple[float, str]]
    y_labels: list[tuple[float, str]]
    title: str
    summary: str  # the text alternative


def line_chart(
    values: list[tuple[str, int]],
    title: str,
    fmt: Callable[[int], str],
    width: int = 560,
    height: int = 220,
    pad: int = 48,
) -> LineChart:
    """`values` are (x label, y) in order; y may be cents, formatted by `fmt`."""
    if not values:
        return LineChart(width, height, "", [], [], title, f"{title}: no data yet.")
    top = max(max(v for _, v in values), 1)
    inner_w, inner_h = width - 2 * pad, height - 2 * pad
    step = inner_w / max(len(values) - 1, 1)
    coords = []
    for i, (_, value) in enumerate(values):
        x = pad + i * step
        y = pad + inner_h - inner_h * value / top
        coords.append(f"{x:.1f},{y:.1f}")
    every = max(1, len(values) // 6)
    x_labels = [(pad + i * step, label) for i, (label, _) in enumerate(values) if i % every == 0]
    y_labels = [(pad + inner_h - inner_h * f, fmt(int(top * f))) for f in (0, 0.5, 1)]
    summary = (
        f"{title}: from {fmt(values[0][1])} on {values[0][0]} to {fmt(values[-1][1])} on {values[-1][0]}."
    )
    return LineChart(width, height, " ".join(coords), x_labels, y_labels, title, summary)
