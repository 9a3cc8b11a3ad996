"""Inline SVG charts for the bot's HTML report: axes with ticks and units, grid lines, a legend; no scripts, no
fonts or files from elsewhere, so the report is one self-contained file.

Values on axes are written plainly (`5,200`, `12.5 ms`, `99.9 %`), never in exponent notation (`5.2e+03` was the
old report's y label)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 28, 40  # the legend lives in the right margin
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass(frozen=True, slots=True)
class Series:
    label: str
    points: Sequence[tuple[float, float | None]]  # (x, y); y None = no data at x
    color: str = ""
    markers: bool = False


def plain(value: float) -> str:
    """A tick label: thousands separated, at most 3 significant decimals, no exponent."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}" if magnitude >= 1e-3 else f"{value:.1e}"


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels with as many decimals as the tick step needs (99.6, 99.8, 100 rather than 100, 100, 100)."""
    step = min((b - a for a, b in zip(ticks, ticks[1:])), default=1.0) or 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [f"{t:,.{decimals}f}" if decimals else plain(t) for t in ticks]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    if not math.isfinite(high) or high <= low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks, t = [], first
    while t < high + step * 0.999:
        ticks.append(round(t, 12))
        t += step
    return ticks


def line_chart(title: str, series: Sequence[Series], x_label: str, y_label: str, *,
               x_transform: Callable[[float], float] = float, x_ticks: Sequence[tuple[float, str]] | None = None,
               y_min: float = 0.0) -> str:
    """Lines (and optional markers) over a linear y axis starting at `y_min`; `x_transform` maps x to the axis
    (e.g. the HDR plot's log of 1 / (1 - p)), and `x_ticks` gives its ticks as (x, label)."""
    xs = [x_transform(x) for s in series for x, y in s.points if y is not None]
    ys = [y for s in series for _, y in s.points if y is not None]
    if not xs:
        return _frame(title, x_label, y_label) + '<text x="300" y="130" font-size="12">no data</text></svg>'
    x_low, x_high = min(xs), max(xs)
    if x_ticks is None:
        ticks_x = nice_ticks(x_low, x_high)
        x_low, x_high = ticks_x[0], ticks_x[-1]
        x_ticks = list(zip(ticks_x, tick_labels(ticks_x)))
    else:
        x_low, x_high = min(x_low, min(x_transform(t) for t, _ in x_ticks)), max(
            x_high, max(x_transform(t) for t, _ in x_ticks))
        x_ticks = [(x_transform(t), label) for t, label in x_ticks]
    ticks_y = nice_ticks(y_min, max(ys))
    y_low, y_high = ticks_y[0], ticks_y[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * ((x - x_low) / ((x_high - x_low) or 1.0))

    def py(y: float) -> float:
        return TOP + plot_h * (1 - (y - y_low) / ((y_high - y_low) or 1.0))

    parts = [_frame(title, x_label, y_label)]
    for t, label in zip(ticks_y, tick_labels(ticks_y)):
        parts.append(f'<line x1="{LEFT}" y1="{py(t):.1f}" x2="{LEFT + plot_w}" y2="{py(t):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" font-size="10" text-anchor="end">{label}</text>')
    for x, label in x_ticks:
        parts.append(f'<line x1="{px(x):.1f}" y1="{TOP + plot_h}" x2="{px(x):.1f}" y2="{TOP + plot_h + 4}" '
                     f'stroke="#666"/><text x="{px(x):.1f}" y="{TOP + plot_h + 16}" font-size="10" '
                     f'text-anchor="middle">{html.escape(label)}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" stroke="#666"/>'
                 f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" stroke="#666"/>')
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        segment: list[str] = []
        segments = [segment]
        for x, y in s.points:
            if y is None:
                segment = []
                segments.append(segment)
                continue
            segment.append(f"{px(x_transform(x)):.1f},{py(y):.1f}")
        for seg in segments:
            if len(seg) > 1:
                parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{" ".join(seg)}"/>')
            if s.markers or len(seg) == 1:
                parts += [f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="3" fill="{color}"/>' for p in seg]
        ly = TOP + 8 + 16 * i
        parts.append(f'<rect x="{LEFT + plot_w + 12}" y="{ly - 8}" width="12" height="3" fill="{color}"/>'
                     f'<text x="{LEFT + plot_w + 30}" y="{ly - 3}" font-size="11">{html.escape(s.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _frame(title: str, x_label: str, y_label: str) -> str:
    plot_h = HEIGHT - TOP - BOTTOM
    return (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" role="img" font-family="sans-serif">'
            f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>'
            f'<text x="{LEFT + (WIDTH - LEFT - RIGHT) / 2}" y="{HEIGHT - 6}" font-size="11" '
            f'text-anchor="middle">{html.escape(x_label)}</text>'
            f'<text x="14" y="{TOP + plot_h / 2}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 14 {TOP + plot_h / 2})">{html.escape(y_label)}</text>')


def nines(percentile: float) -> float:
    """The HDR plot's x axis: log10 of 1 / (1 - p), so 90 %, 99 %, 99.9 %, 99.99 % sit one step apart."""
    return math.log10(1.0 / max(1.0 - percentile / 100.0, 1e-5))


HDR_TICKS = ((0.0, "0 %"), (90.0, "90 %"), (99.0, "99 %"), (99.9, "99.9 %"), (99.99, "99.99 %"))
