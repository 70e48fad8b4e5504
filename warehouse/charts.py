"""Small hand-written SVG charts for the HTML report: no library, no network, no script.

Each function takes already-aggregated values and returns one ``<svg>`` element as text.
Money arrives as ``Decimal`` and is scaled to pixels with Decimal arithmetic, so no
binary float ever touches an amount; ratios (hit rates, shares) may be floats.
Every mark carries a ``<title>`` so hovering shows its exact value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from html import escape

from spendstream.wording import plural, usd

__all__ = [
    "PALETTE",
    "Marker",
    "color_for",
    "hbars",
    "line_chart",
    "nice_ceiling",
    "plural",
    "split_bars",
    "stacked_columns",
    "usd",
]

# Distinguishable on screen and in print (Tableau 10).
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_AXIS = "#555"
_GRID = "#e3e3e3"
_PX = Decimal("0.1")


def color_for(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above ``value`` (axis maximum)."""
    if value <= 0:
        return Decimal(1)
    exp = value.adjusted()
    for step in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        top = step.scaleb(exp)
        if top >= value:
            return top
    return Decimal(10).scaleb(exp)  # pragma: no cover (the loop always returns)


def _px(v: Decimal) -> str:
    return f"{v.quantize(_PX):f}"


def _scale(value: Decimal, top: Decimal, span: int) -> Decimal:
    return (Decimal(value) * span / top) if top else Decimal(0)


@dataclass(frozen=True, slots=True)
class Marker:
    """A point in time on a timeline: an alert kind or a breaker opening."""

    at: datetime
    label: str
    kind: str  # "alert" | "breaker" | "anomaly"
    color: str


def _svg_open(chart_id: str, width: int, height: int, label: str) -> str:
    return (
        f'<svg id="{escape(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}">'
    )


def _y_axis(top: Decimal, left: int, top_px: int, plot_h: int, right: int, money: bool) -> str:
    parts = []
    for i in range(5):
        v = top * i / 4
        y = Decimal(top_px + plot_h) - _scale(v, top, plot_h)
        text = usd(v, 2 if top < 100 else 0) if money else f"{v * 100:.0f}%"
        parts.append(
            f'<line x1="{left}" x2="{right}" y1="{_px(y)}" y2="{_px(y)}" stroke="{_GRID}"/>'
            f'<text x="{left - 6}" y="{_px(y + 4)}" text-anchor="end" class="tick">{text}</text>'
        )
    return "".join(parts)


def _x_labels(buckets: Sequence[datetime], x_of: list[Decimal], baseline: int, hourly: bool) -> str:
    n = len(buckets)
    every = max(1, n // 12)
    parts = []
    for i in range(0, n, every):
        b = buckets[i]
        text = b.strftime("%m-%d %H:00") if hourly else b.strftime("%Y-%m-%d")
        parts.append(
            f'<text x="{_px(x_of[i])}" y="{baseline + 16}" text-anchor="middle" '
            f'class="tick">{escape(text)}</text>'
        )
    return "".join(parts)


def stacked_columns(
    chart_id: str,
    buckets: Sequence[datetime],
    series: Sequence[tuple[str, Sequence[Decimal]]],
    *,
    markers: Sequence[Marker] = (),
    highlights: Sequence[datetime] = (),
    hourly: bool = True,
    width: int = 1100,
    height: int = 340,
) -> str:
    """Spend per time bucket stacked by series (teams); markers and highlighted buckets."""
    # Two marker rows above the plot: breaker squares, then alert triangles.
    left, right, top_px, bottom = 70, width - 10, 40, height - 30
    plot_h = bottom - top_px
    n = max(1, len(buckets))
    col_w = Decimal(right - left) / n
    totals = [sum((s[1][i] for s in series), Decimal(0)) for i in range(len(buckets))]
    top = nice_ceiling(max(totals, default=Decimal(0)))
    x_of = [Decimal(left) + col_w * i + col_w / 2 for i in range(len(buckets))]
    index = {b: i for i, b in enumerate(buckets)}
    out = [_svg_open(chart_id, width, height, "spend over time, stacked by team")]
    out.append(_y_axis(top, left, top_px, plot_h, right, money=True))
    for h in highlights:
        i = index.get(h)
        if i is None:
            continue
        out.append(
            f'<rect class="anomaly" x="{_px(Decimal(left) + col_w * i)}" y="{top_px}" '
            f'width="{_px(max(col_w, Decimal(2)))}" height="{plot_h}" fill="#e15759" '
            f'fill-opacity="0.18"><title>hourly anomaly in this hour</title></rect>'
        )
    bar_w = max(col_w * Decimal("0.86"), Decimal(1))
    below = [Decimal(0)] * len(buckets)
    for si, (name, values) in enumerate(series):
        color = color_for(si)
        for i, v in enumerate(values):
            if not v:
                continue
            y0 = Decimal(bottom) - _scale(below[i], top, plot_h)
            bar_h = _scale(v, top, plot_h)
            below[i] += v
            out.append(
                f'<rect class="bar" x="{_px(x_of[i] - bar_w / 2)}" y="{_px(y0 - bar_h)}" '
                f'width="{_px(bar_w)}" height="{_px(max(bar_h, Decimal("0.5")))}" fill="{color}">'
                f"<title>{escape(name)} {escape(buckets[i].isoformat())}: {usd(v)}</title></rect>"
            )
    # Dashed guide lines help with a few markers and bury the bars under many.
    guides = len(markers) <= 24
    for m in markers:
        i = _nearest(buckets, m.at)
        if i is None:
            continue
        x = x_of[i]
        if m.kind == "breaker":
            shape = (
                f'<path class="marker breaker" d="M{_px(x - 5)} {top_px - 28}h10v10h-10z" '
                f'fill="{m.color}"/>'
            )
        else:
            shape = f'<path class="marker alert" d="M{_px(x)} {top_px - 4}l-5 -9h10z" fill="{m.color}"/>'
        guide = (
            f'<line x1="{_px(x)}" x2="{_px(x)}" y1="{top_px}" y2="{bottom}" stroke="{m.color}" '
            'stroke-dasharray="3 3" stroke-opacity="0.7"/>'
            if guides
            else ""
        )
        out.append(f"<g><title>{escape(m.label)}</title>{shape}{guide}</g>")
    out.append(
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="{_AXIS}"/>'
        + _x_labels(buckets, x_of, bottom, hourly)
    )
    out.append("</svg>")
    return "".join(out)


def _nearest(buckets: Sequence[datetime], at: datetime) -> int | None:
    if not buckets or at < buckets[0]:
        return None
    lo, hi = 0, len(buckets) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if buckets[mid] <= at:
            lo = mid
        else:
            hi = mid - 1
    return lo


def line_chart(
    chart_id: str,
    buckets: Sequence[datetime],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    hourly: bool = True,
    width: int = 1100,
    height: int = 280,
) -> str:
    """Ratios (0..1) over time, one line per series; gaps where a bucket had no data."""
    left, right, top_px, bottom = 70, width - 10, 16, height - 30
    plot_h = bottom - top_px
    n = max(1, len(buckets))
    col_w = Decimal(right - left) / n
    x_of = [Decimal(left) + col_w * i + col_w / 2 for i in range(len(buckets))]
    out = [_svg_open(chart_id, width, height, "cache hit rate by feature over time")]
    out.append(_y_axis(Decimal(1), left, top_px, plot_h, right, money=False))
    for si, (name, values) in enumerate(series):
        color = color_for(si)
        path: list[str] = []
        pen_up = True
        for i, v in enumerate(values):
            if v is None:
                pen_up = True
                continue
            y = Decimal(bottom) - Decimal(str(round(v, 4))) * plot_h
            path.append(f"{'M' if pen_up else 'L'}{_px(x_of[i])} {_px(y)}")
            pen_up = False
        if path:
            out.append(
                f'<path class="line" d="{" ".join(path)}" fill="none" stroke="{color}" '
                f'stroke-width="2.5"><title>{escape(name)}</title></path>'
            )
    out.append(
        f'<line x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}" stroke="{_AXIS}"/>'
        + _x_labels(buckets, x_of, bottom, hourly)
    )
    out.append("</svg>")
    return "".join(out)


def _label_room(names: Sequence[str], width: int) -> tuple[int, int]:
    """(left margin in px, characters that fit in it) for bar labels: room for the longest
    label (about 6.2 px per character at 11 px), up to 45% of the chart; a label still cut
    short keeps its whole name in the bar's title."""
    longest = max((len(n) for n in names), default=0)
    fits = min(longest, int((width * 0.45 - 14) / 6.2))
    return max(120, math.ceil(fits * 6.2 + 14)), fits


def hbars(
    chart_id: str,
    rows: Sequence[tuple[str, Decimal, str, str]],
    *,
    label: str,
    width: int = 540,
) -> str:
    """Horizontal bars: (label, value, colour, text shown after the bar) per row."""
    row_h = 24
    left, fits = _label_room([name for name, *_ in rows], width)
    # Room after the bars for the longest value text (about 6 px per character at 11 px).
    right = width - min(max((len(t) for *_, t in rows), default=0) * 6 + 12, (width - left) // 2)
    height = max(1, len(rows)) * row_h + 8
    top = max((v for _, v, _, _ in rows), default=Decimal(0))
    top = top if top > 0 else Decimal(1)
    out = [_svg_open(chart_id, width, height, label)]
    for i, (name, value, color, text) in enumerate(rows):
        y = 4 + i * row_h
        w = _scale(max(value, Decimal(0)), top, right - left)
        short = name if len(name) <= fits else name[: fits - 1] + "…"
        out.append(
            f'<text x="{left - 6}" y="{y + 16}" text-anchor="end" class="tick">{escape(short)}</text>'
            f'<rect class="bar" x="{left}" y="{y + 3}" width="{_px(max(w, Decimal(1)))}" '
            f'height="{row_h - 6}" fill="{color}"><title>{escape(name)}: {escape(text)}</title>'
            f'</rect><text x="{_px(left + w + 6)}" y="{y + 16}" class="val">{escape(text)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def split_bars(
    chart_id: str,
    rows: Sequence[tuple[str, Sequence[Decimal]]],
    parts: Sequence[tuple[str, str]],
    *,
    label: str,
    width: int = 540,
) -> str:
    """100%-stacked horizontal bars: each row's parts (name, colour) as shares of its total."""
    row_h, right = 24, width - 10
    left, fits = _label_room([name for name, _ in rows], width)
    height = max(1, len(rows)) * row_h + 8
    out = [_svg_open(chart_id, width, height, label)]
    span = right - left
    for i, (name, values) in enumerate(rows):
        y = 4 + i * row_h
        total = sum(values, Decimal(0))
        short = name if len(name) <= fits else name[: fits - 1] + "…"
        out.append(
            f'<text x="{left - 6}" y="{y + 16}" text-anchor="end" class="tick">{escape(short)}</text>'
        )
        x = Decimal(left)
        for (part, color), v in zip(parts, values, strict=True):
            if not total or not v:
                continue
            w = _scale(v, total, span)
            share = (v / total * 100).quantize(Decimal("0.1"))
            out.append(
                f'<rect class="bar" x="{_px(x)}" y="{y + 3}" width="{_px(w)}" height="{row_h - 6}" '
                f'fill="{color}"><title>{escape(name)} {escape(part)}: {usd(v)} ({share}%)</title>'
                "</rect>"
            )
            x += w
    out.append("</svg>")
    return "".join(out)
