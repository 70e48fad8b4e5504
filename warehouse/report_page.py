"""Rendering of the HTML cost report (pure: a ``ReportData`` in, one HTML page out).

Sections top to bottom: the written summary, spend over time by team with alerts,
breaker openings and anomalous hours marked, top cost drivers (features, models, api
keys, sessions with their sub-agent trees), unit economics per feature, cache hit rate,
retry overhead and the output/input cost split. Charts come from ``charts.py``; the
page shell and styles from ``report_template.html``.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape
from importlib import resources
from string import Template
from typing import TYPE_CHECKING

from spendstream.warehouse.charts import (
    color_for,
    hbars,
    line_chart,
    plural,
    split_bars,
    stacked_columns,
    usd,
)

if TYPE_CHECKING:
    from spendstream.warehouse.report import Period, ReportData

__all__ = [
    "ALERT_COLORS",
    "BANDS",
    "BREAKER_COLOR",
    "OTHER_TEAMS",
    "TOP_N",
    "band_for",
    "clip",
    "cost_text",
    "render",
    "span_text",
]

# AI cost as a share of revenue: the unit-economics bands (<20% good, 20-50%, >50%).
BANDS = (("good", Decimal("0.2"), "#59a14f"), ("acceptable", Decimal("0.5"), "#edc948"))
CONCERNING = ("concerning", "#e15759")
NO_REVENUE = "#bab0ac"
OTHER_TEAMS = "other teams"
TOP_N = 10
_ZERO = Decimal(0)
ALERT_COLORS = {
    "runaway_rate": "#d62728",
    "runaway_session": "#8c1d18",
    "retry_storm": "#ff7f0e",
    "budget_threshold": "#bcbd22",
    "budget_exceeded": "#9467bd",
    "unpriced_model": "#7f7f7f",
    "cache_hit_drop": "#17becf",
}
BREAKER_COLOR = "#111111"


def band_for(ratio: Decimal | None) -> tuple[str, str]:
    """(band, colour) of an AI-cost-to-revenue ratio; ("no revenue", grey) when unknown."""
    if ratio is None:
        return "no revenue", NO_REVENUE
    for name, upper, color in BANDS:
        if ratio < upper or (name == "acceptable" and ratio <= upper):
            return name, color
    return CONCERNING


def span_text(p: Period) -> str:
    return f"{p.since:%Y-%m-%d %H:%M} to {p.until:%Y-%m-%d %H:%M} UTC"


def clip(text: str | None, n: int) -> str:
    t = text or ""
    return t if len(t) <= n else t[: n - 1] + "…"


def cost_text(cost: Decimal | None, calls: int = 0, unpriced: int = 0) -> str:
    """An amount for people; calls with no price say so instead of passing for $0.00."""
    if cost is None or (calls and unpriced >= calls):
        return "unpriced"
    text = usd(cost)
    return f"{text} + {plural(unpriced, 'unpriced call')}" if unpriced else text


def _pct(x: Decimal | float | None) -> str:
    return "–" if x is None else f"{Decimal(str(x)) * 100:.1f}%"


def _signed(v: Decimal) -> str:
    return ("+" if v >= 0 else "") + usd(v)


def _summary_html(d: ReportData) -> str:
    top_team = max(
        (s for s in d.team_series if s[0] != OTHER_TEAMS),
        key=lambda s: sum(s[1], _ZERO),
        default=None,
    )
    parts = [
        f'<p class="headline">Spent <strong id="summary-total" data-usd="{d.total_usd}">'
        f'{usd(d.total_usd)}</strong> on <span id="summary-calls" data-calls="{d.calls}">'
        f"{plural(d.calls, 'call')}</span>"
        + (f' <span id="summary-filter">({escape(d.filter_text)})</span>' if d.filter_text else "")
        + f", {escape(span_text(d.period))}.</p>"
    ]
    c = d.comparison
    if c is None:
        parts.append('<p id="summary-change">No earlier facts to compare with.</p>')
    else:
        pct = c.change_pct
        direction = "up" if c.after_usd >= c.before_usd else "down"
        change = f"{direction} {abs(pct)}%" if pct is not None else "from nothing"
        parts.append(
            f'<p id="summary-change" data-before-usd="{c.before_usd}" '
            f'data-after-usd="{c.after_usd}">Against {escape(c.label)}: {usd(c.after_usd)} '
            f"vs {usd(c.before_usd)}, <strong>{change}</strong>.</p>"
        )
        if c.movers:
            items = "".join(
                f'<li class="mover" data-name="{escape(k)}" data-before-usd="{b}" '
                f'data-after-usd="{a}"><strong>{escape(k)}</strong> {_signed(a - b)} '
                f"({usd(b)} → {usd(a)})</li>"
                for k, b, a in c.movers
            )
            parts.append(f'<p>Largest movers:</p><ol id="summary-movers">{items}</ol>')
    if top_team and d.total_usd:
        t_usd = sum(top_team[1], _ZERO)
        parts.append(
            f"<p>Largest team: <strong>{escape(top_team[0])}</strong> {usd(t_usd)} "
            f"({_pct(t_usd / d.total_usd)}). Alerts: {d.alerts:,}; circuit breakers opened: "
            f"{d.breaker_openings_count:,}.</p>"
        )
    if d.unpriced_calls:
        parts.append(
            f'<p class="warn">{plural(d.unpriced_calls, "call")} had no price (unpriced '
            "models): they are left out of the amounts and marked <em>unpriced</em>; "
            "<code>spendstream prices unpriced</code> lists the models.</p>"
        )
    return "".join(parts)


def _legend(items: list[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{c}"></i>{escape(n)}</span>' for n, c in items)
        + "</div>"
    )


def _table(head: list[str], rows: list[list[str]], cls: str = "", empty: str = "") -> str:
    if not rows and empty:
        return f'<p class="muted">{escape(empty)}</p>'
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _spend_section(d: ReportData) -> str:
    chart = stacked_columns(
        "chart-spend",
        d.buckets,
        d.team_series,
        markers=d.markers,
        highlights=d.anomaly_buckets,
        hourly=d.period.bucket == "hour",
    )
    legend = _legend(
        [(n, color_for(i)) for i, (n, _) in enumerate(d.team_series)]
        + [("alert (▼)", "#d62728"), ("breaker opened (■)", BREAKER_COLOR)]
        + ([("hourly anomaly (shaded)", "#f3c5c5")] if d.anomaly_buckets else [])
    )
    alerts = _table(
        ["alert kind", "count", "scopes", "first", "last", "example"],
        [
            [
                escape(k),
                f"{n:,}",
                f"{s:,}",
                f"{a:%m-%d %H:%M}",
                f"{z:%m-%d %H:%M}",
                escape(clip(ex, 120)),
            ]
            for k, n, a, z, s, ex in d.alert_kinds
        ],
        empty="No alerts in this period.",
    )
    breakers = _table(
        ["breaker opened", "scope", "reason"],
        [[f"{t:%Y-%m-%d %H:%M:%S}", escape(s), escape(r)] for t, s, r in d.breaker_openings],
        empty="No circuit breaker opened in this period.",
    )
    return (
        f"<h2>Spend over time, by team <small>per {d.period.bucket}</small></h2>{legend}{chart}"
        f'<div class="cols"><div>{alerts}</div><div>{breakers}</div></div>'
    )


def _drivers_section(d: ReportData) -> str:
    def bars(chart_id: str, rows: list[tuple[str, Decimal, int, int]], label: str) -> str:
        shown = [
            (k, c, color_for(0), f"{cost_text(c, n, u)} · {plural(n, 'call')}")
            for k, c, n, u in rows
        ]
        return f"<div><h3>{escape(label)}</h3>{hbars(chart_id, shown, label=label)}</div>"

    sessions = []
    for s in d.sessions:
        tree = "".join(
            f'<div class="node" style="padding-left:{12 * int(depth)}px">'
            f"{'└ ' if depth else ''}{escape(str(sid))} · {plural(int(calls), 'call')} · "
            f"{cost_text(cost)}</div>"
            for sid, depth, calls, cost in s["tree"]
        )
        more = s["sessions"] - len(s["tree"])
        if more > 0:
            tree += f'<div class="node muted">… {more} more sub-agent {"session" if more == 1 else "sessions"}</div>'
        sessions.append(
            [
                f"<strong>{escape(str(s['session_id']))}</strong>{tree}",
                escape(str(s["team"] or "")),
                f"{int(s['calls']):,}",
                f"{int(s['sub_agent_sessions']):,}",
                cost_text(s["tree_cost_usd"]),
                _pct(s["sub_agent_overhead_share"]),
            ]
        )
    return (
        '<h2>Top cost drivers</h2><div class="cols">'
        + bars("chart-features", d.top_features, "features (team / feature)")
        + bars("chart-models", d.top_models, "models")
        + '</div><div class="cols">'
        + bars("chart-api-keys", d.top_api_keys, "api keys")
        + "<div><h3>sessions, with their sub-agent trees</h3>"
        + _table(
            ["session tree", "team", "calls", "sub-agents", "tree cost", "sub-agent share"],
            sessions,
            "sessions",
        )
        + "</div></div>"
    )


def _unit_section(d: ReportData) -> str:
    if not d.unit_features:
        return "<h2>Unit economics per feature</h2><p>No facts with a user_id in these months.</p>"
    latest = d.unit_features[0][0]
    rows = []
    bars: list[tuple[str, Decimal, str, str]] = []
    for month, key, users, cost, per_user, rev_per_user in d.unit_features:
        ratio = (
            (Decimal(per_user) / rev_per_user) if rev_per_user and per_user is not None else None
        )
        band, color = band_for(ratio)
        if cost is None:
            band, color = "unpriced", NO_REVENUE
        if month == latest and len(bars) < TOP_N:
            per_user_text = "unpriced" if cost is None else f"{usd(per_user)}/user · {band}"
            bars.append((key, Decimal(per_user or 0), color, per_user_text))
        rows.append(
            [
                f"{month:%Y-%m}",
                escape(key),
                f"{users:,}",
                cost_text(cost),
                cost_text(per_user),
                usd(rev_per_user) if rev_per_user is not None else "–",
                f'<span class="band" style="background:{color}">{_pct(ratio)} {band}</span>',
            ]
        )
    totals = (
        _table(
            ["month", "level", "plan", "revenue", "AI cost", "AI cost / revenue", "band"],
            [
                [
                    f"{m:%Y-%m}",
                    escape(lv),
                    escape(k or ""),
                    usd(r),
                    usd(c),
                    _pct(ratio),
                    escape(b or "–"),
                ]
                for m, lv, k, r, c, ratio, b in d.unit_totals
            ],
            "unit-totals",
        )
        if d.unit_totals
        else ""
    )
    legend = _legend(
        [("< 20% of revenue: good", BANDS[0][2]), ("20-50%: acceptable", BANDS[1][2]),
         ("> 50%: concerning", CONCERNING[1]), ("no revenue loaded", NO_REVENUE)]
    )  # fmt: skip
    note = (
        "" if d.unit_totals
        else "<p class=\"muted\">No revenue loaded for these months: "
        "<code>spendstream warehouse load-revenue FILE.csv</code> colours these bars.</p>"
    )  # fmt: skip
    return (
        f"<h2>Unit economics per feature <small>cost per active user per month, {latest:%Y-%m}"
        f"</small></h2>{legend}{note}"
        + hbars("chart-unit", bars, label="cost per active user per feature", width=760)
        + _table(
            [
                "month",
                "feature",
                "active users",
                "cost",
                "cost / user",
                "revenue / user",
                "share of revenue",
            ],
            rows[: 3 * TOP_N],
        )
        + totals
    )


def _efficiency_section(d: ReportData) -> str:
    cache = line_chart("chart-cache", d.buckets, d.cache_series, hourly=d.period.bucket == "hour")
    retry = hbars(
        "chart-retry",
        [
            (
                k,
                oc,
                color_for(3),
                f"{usd(oc)} ({_pct(share)}) · {r:,} {'retry' if r == 1 else 'retries'}, "
                f"{f:,} failed",
            )
            for k, oc, share, r, f in d.retry_rows
        ],
        label="retry and failure overhead",
        width=620,
    )
    parts = [
        ("input", color_for(0)), ("cache read", color_for(4)),
        ("cache write", color_for(5)), ("output", color_for(1)),
    ]  # fmt: skip
    split = split_bars("chart-split", d.split_rows, parts, label="cost split by token kind")
    totals = [sum((r[1][i] for r in d.split_rows), _ZERO) for i in range(4)]
    whole = sum(totals, _ZERO)
    shares = ", ".join(
        f"{n} {_pct(v / whole) if whole else '–'}" for (n, _), v in zip(parts, totals, strict=True)
    )
    return (
        f"<h2>Cache hit rate by feature <small>cache-read share of input tokens, per "
        f"{d.period.bucket}</small></h2>"
        + _legend([(n, color_for(i)) for i, (n, _) in enumerate(d.cache_series)])
        + cache
        + '<div class="cols"><div><h3>Retry overhead <small>cost of attempts &gt; 1 and failed '
        "calls</small></h3>"
        + (retry if d.retry_rows else "<p>No retries or failed calls.</p>")
        + "</div><div><h3>Output / input cost split <small>top features</small></h3>"
        + _legend(parts)
        + split
        + f'<p class="muted">Top features together: {escape(shares)}.</p></div></div>'
    )


def render(d: ReportData) -> str:
    """The whole page (pure: the same data gives the same bytes)."""
    body = (
        f'<section id="summary">{_summary_html(d)}</section>'
        f'<section id="spend">{_spend_section(d)}</section>'
        f'<section id="drivers">{_drivers_section(d)}</section>'
        f'<section id="unit-economics">{_unit_section(d)}</section>'
        f'<section id="efficiency">{_efficiency_section(d)}</section>'
    )
    template = Template(
        resources.files("spendstream.warehouse").joinpath("report_template.html").read_text("utf-8")
    )
    return template.substitute(
        title=escape(
            f"spendstream cost report, {d.period.since:%Y-%m-%d} to {d.period.until:%Y-%m-%d}"
        ),
        period=escape(span_text(d.period)),
        generated=escape(d.generated_at.isoformat()),
        body=body,
    )
