"""A small trend chart as a self-contained SVG: the values in order, their median, the noise band
(median +- k x MAD), the newest point highlighted, each point's run and commit on hover."""

from __future__ import annotations

import html
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .noise import DEFAULT_K, mad


@dataclass(frozen=True)
class Point:
    value: float
    label: str  # shown on hover: run id, commit


def trend_svg(title: str, points: Sequence[Point], k: float = DEFAULT_K, width: int = 480, height: int = 160) -> str:
    if not points:
        empty = f'<text x="8" y="20">{html.escape(title)}: no history</text>'
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">{empty}</svg>'
    values = [p.value for p in points]
    middle = statistics.median(values)
    spread = mad(values) if len(values) > 1 else 0.0
    low, high = min([*values, middle - k * spread]), max([*values, middle + k * spread])
    span = (high - low) or abs(high) or 1.0
    pad, top = 24, 28

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * (i / max(len(points) - 1, 1))

    def y(v: float) -> float:
        return top + (height - top - pad) * (1 - (v - low) / span)

    upper, lower = y(middle + k * spread), y(middle - k * spread)
    band = (
        f'<rect x="{pad}" y="{upper:.1f}" width="{width - 2 * pad}" height="{max(lower - upper, 1):.1f}" '
        f'fill="#dbe9f6"><title>noise band: median +- {k:g} x MAD ({spread:g})</title></rect>'
    )
    median_line = (
        f'<line x1="{pad}" x2="{width - pad}" y1="{y(middle):.1f}" y2="{y(middle):.1f}" stroke="#4a7ab5" '
        f'stroke-dasharray="4 3"><title>median {middle:g}</title></line>'
    )
    path = " ".join(f"{x(i):.1f},{y(p.value):.1f}" for i, p in enumerate(points))
    dots = "".join(
        f'<circle class="{"current" if i == len(points) - 1 else "point"}" cx="{x(i):.1f}" cy="{y(p.value):.1f}" '
        f'r="{5 if i == len(points) - 1 else 3}" fill="{"#d9480f" if i == len(points) - 1 else "#333"}">'
        f"<title>{html.escape(p.label)}: {p.value:g}</title></circle>"
        for i, p in enumerate(points)
    )
    heading = f"{html.escape(title)} (median {middle:g}, MAD {spread:g}, n={len(points)})"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<text x="{pad}" y="16" font-family="sans-serif" font-size="12">{heading}</text>'
        f'{band}{median_line}<polyline points="{path}" fill="none" stroke="#333"/>{dots}</svg>'
    )


def trend_charts(
    history: Callable[[str, str], Sequence[tuple[str, float, str]]],
    current: Iterable[tuple[str, str, float | None]],
    k: float = DEFAULT_K,
) -> dict[tuple[str, str], str]:
    """A chart per (model, arch) of this session that has history: `history(model, arch)` gives its
    earlier (run id, value, commit), oldest first; this session's value, when it has one, comes last."""
    charts = {}
    for model, arch, value in current:
        earlier = [Point(v, f"{run} {commit[:12]}".strip()) for run, v, commit in history(model, arch)]
        if not earlier:
            continue
        points = [*earlier, *([Point(value, "this session")] if value is not None else [])]
        charts[(model, arch)] = trend_svg(f"{model} on {arch}", points, k)
    return charts
