"""Small SVG charts for the HTML report: lines over time, bars, a state timeline, intervals.

Each function returns one ``<svg>`` element as text, ready to be placed inline in an HTML5
document (no ``xmlns`` needed there, and no script, font or stylesheet fetched from anywhere).
Every text that reaches the markup goes through :func:`html.escape`: provider and model names
come from a log that anyone may have written.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

__all__ = ["PALETTE", "STATE_COLOURS", "bar_chart", "interval_chart", "line_chart", "timeline"]

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")
"""Series colours, in order (distinct for common colour blindness as far as eight allow)."""

STATE_COLOURS = {
    "closed": "#16a34a",
    "half_open": "#f59e0b",
    "open": "#dc2626",
    "failed": "#7f1d1d",
    "": "#e5e7eb",
}
"""Circuit states of the health timeline (``""``: no evidence yet)."""

_DASHES = ("", 'stroke-dasharray="7,3" ', 'stroke-dasharray="2,2" ')
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _nice_max(value: float) -> float:
    """Return a round axis maximum at or above ``value``."""
    if not value > 0 or not math.isfinite(value):
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.4g}"
    return f"{value:.3g}"


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    parts = []
    for i, name in enumerate(names):
        colour = PALETTE[i % len(PALETTE)]
        cx = x + (i % 4) * 160
        cy = y + (i // 4) * 16
        parts.append(
            f'<rect x="{cx:.1f}" y="{cy - 9:.1f}" width="12" height="10" fill="{colour}"/>'
        )
        parts.append(f'<text x="{cx + 16:.1f}" y="{cy:.1f}" {_FONT}>{_esc(name)}</text>')
    return parts


def line_chart(
    series: Mapping[str, Sequence[float | None]],
    labels: Sequence[str],
    *,
    title: str,
    unit: str = "",
    width: int = 1100,
    height: int = 260,
    css_class: str = "chart",
) -> str:
    """Return a line chart of ``series`` (name -> one value per label; ``None``: a gap)."""
    names = list(series)
    legend_rows = max(1, math.ceil(len(names) / 4))
    left, right, top, bottom = 70, 20, 30, 40 + 16 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    y_max = _nice_max(max(values, default=0.0))
    count = max(len(labels), 1)

    def x_of(i: int) -> float:
        return left + (plot_w * (i + 0.5) / count)

    def y_of(v: float) -> float:
        return top + plot_h * (1 - v / y_max)

    parts = [
        f'<svg class="{_esc(css_class)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="18" {_FONT} font-weight="bold">{_esc(title)}</text>',
    ]
    for k in range(5):
        v = y_max * k / 4
        y = y_of(v)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e7eb"/>'
        )
        label = f"{_fmt(v)} {unit}".strip()
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{_esc(label)}</text>'
        )
    step = max(1, math.ceil(count / 8))
    for i in range(0, len(labels), step):
        parts.append(
            f'<text x="{x_of(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle" {_FONT}>'
            f"{_esc(labels[i])}</text>"
        )
    for n, name in enumerate(names):
        colour = PALETTE[n % len(PALETTE)]
        # Dashes keep a series visible where it runs on top of another (p95 under p99).
        dash = _DASHES[n % len(_DASHES)]
        run: list[str] = []
        runs: list[list[str]] = [run]
        for i, value in enumerate(series[name]):
            if value is None or not math.isfinite(value):
                run = []
                runs.append(run)
                continue
            run.append(f"{x_of(i):.1f},{y_of(value):.1f}")
        for points in runs:
            if len(points) == 1:
                cx, cy = points[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{colour}"/>')
            elif points:
                parts.append(
                    f'<polyline fill="none" stroke="{colour}" stroke-width="2" {dash}'
                    f'points="{" ".join(points)}"><title>{_esc(name)}</title></polyline>'
                )
    parts += _legend(names, left, top + plot_h + 34)
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    unit: str = "",
    width: int = 540,
    css_class: str = "chart",
) -> str:
    """Return a horizontal bar chart of ``(label, value)`` pairs."""
    row, left, top = 22, 170, 30
    height = top + row * max(len(items), 1) + 16
    plot_w = width - left - 90
    v_max = _nice_max(max((v for _, v in items), default=0.0))
    parts = [
        f'<svg class="{_esc(css_class)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="18" {_FONT} font-weight="bold">{_esc(title)}</text>',
    ]
    if not items:
        parts.append(f'<text x="10" y="{top + 14}" {_FONT}>no data</text>')
    for i, (label, value) in enumerate(items):
        y = top + i * row
        w = max(plot_w * value / v_max, 1.0) if value > 0 else 0.0
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" {_FONT}>{_esc(label)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colour}">'
            f"<title>{_esc(label)}: {_esc(_fmt(value))} {_esc(unit)}</title></rect>"
            f'<text x="{left + w + 4:.1f}" y="{y + 14}" {_FONT}>'
            f"{_esc(f'{_fmt(value)} {unit}'.strip())}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def timeline(
    rows: Mapping[str, Sequence[str]],
    labels: Sequence[str],
    *,
    title: str,
    width: int = 1100,
    css_class: str = "chart",
) -> str:
    """Return one band per row, coloured by state per time bucket (see :data:`STATE_COLOURS`)."""
    row, left, top = 24, 170, 30
    count = max(len(labels), 1)
    height = top + row * max(len(rows), 1) + 50
    plot_w = width - left - 20
    cell = plot_w / count
    parts = [
        f'<svg class="{_esc(css_class)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="18" {_FONT} font-weight="bold">{_esc(title)}</text>',
    ]
    for r, (name, states) in enumerate(rows.items()):
        y = top + r * row
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" {_FONT}>{_esc(name)}</text>'
        )
        for i, state in enumerate(states):
            colour = STATE_COLOURS.get(state, STATE_COLOURS[""])
            parts.append(
                f'<rect x="{left + i * cell:.1f}" y="{y + 2}" width="{cell + 0.5:.1f}" '
                f'height="{row - 4}" fill="{colour}"><title>{_esc(name)} {_esc(labels[i])}: '
                f"{_esc(state or 'no evidence')}</title></rect>"
            )
    base = top + row * max(len(rows), 1)
    step = max(1, math.ceil(count / 8))
    for i in range(0, len(labels), step):
        parts.append(
            f'<text x="{left + (i + 0.5) * cell:.1f}" y="{base + 14}" text-anchor="middle" '
            f"{_FONT}>{_esc(labels[i])}</text>"
        )
    for k, (state, colour) in enumerate(s for s in STATE_COLOURS.items() if s[0]):
        x = left + k * 110
        parts.append(
            f'<rect x="{x}" y="{base + 26}" width="12" height="10" fill="{colour}"/>'
            f'<text x="{x + 16}" y="{base + 35}" {_FONT}>{_esc(state)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def interval_chart(
    items: Sequence[tuple[str, float | None, tuple[float, float] | None]],
    *,
    title: str,
    unit: str = "",
    width: int = 540,
    css_class: str = "chart",
) -> str:
    """Return estimates with their intervals: ``(label, value, (low, high))`` per row."""
    row, left, top = 28, 170, 30
    height = top + row * max(len(items), 1) + 30
    plot_w = width - left - 30
    ends = [e for _, v, ci in items for e in ([v] if v is not None else []) + list(ci or ())]
    ends = [e for e in ends if math.isfinite(e)]
    lo, hi = min(ends, default=0.0), max(ends, default=1.0)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        hi = lo + 1.0
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad

    def x_of(v: float) -> float:
        return left + plot_w * (v - lo) / (hi - lo)

    parts = [
        f'<svg class="{_esc(css_class)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_esc(title)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="18" {_FONT} font-weight="bold">{_esc(title)}</text>',
        f'<line x1="{x_of(0):.1f}" y1="{top}" x2="{x_of(0):.1f}" y2="{height - 24}" '
        f'stroke="#9ca3af" stroke-dasharray="3,3"/>',
    ]
    for i, (label, value, ci) in enumerate(items):
        y = top + i * row + row / 2
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{_esc(label)}</text>'
        )
        if ci is not None:
            x1, x2 = x_of(ci[0]), x_of(ci[1])
            parts.append(
                f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" stroke="{colour}" '
                f'stroke-width="3"/><line x1="{x1:.1f}" y1="{y - 6:.1f}" x2="{x1:.1f}" '
                f'y2="{y + 6:.1f}" stroke="{colour}" stroke-width="2"/><line x1="{x2:.1f}" '
                f'y1="{y - 6:.1f}" x2="{x2:.1f}" y2="{y + 6:.1f}" stroke="{colour}" '
                f'stroke-width="2"/>'
            )
        if value is not None and math.isfinite(value):
            text = f"{_fmt(value)} {unit}".strip()
            if ci is not None:
                text += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
            parts.append(
                f'<circle cx="{x_of(value):.1f}" cy="{y:.1f}" r="5" fill="{colour}">'
                f"<title>{_esc(label)}: {_esc(text)}</title></circle>"
            )
    for v in (lo + pad, hi - pad):
        parts.append(
            f'<text x="{x_of(v):.1f}" y="{height - 8}" text-anchor="middle" {_FONT}>'
            f"{_esc(f'{_fmt(v)} {unit}'.strip())}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
