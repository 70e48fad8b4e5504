"""The HTML cost report: one self-contained page that answers "where did the money go".

``write_report(workdir, out, since, until)`` aggregates the warehouse views in DuckDB
(``gather``: only aggregates leave the database, so the page stays small at 10M facts)
and renders them (``report_page.render``: pure) as hand-written SVG charts in one HTML
file with no script, no font and no link to fetch: it opens offline in any browser.

The period is ``[since, until)``; by default from the first UTC day with facts to the
end of the last one. ``ReportFilter`` narrows the page to one team, feature or any scope
(``api_key:k``, ``session:s``...): ``apply_filter`` shadows the ``usage_facts``, ``alerts``
and ``breaker_events`` views with filtered temporary views of the same names in the reading
session, so every aggregate (named-query views included) sees only the filtered rows. The summary compares it with the equal-length period before it;
when that holds no facts (a first report), it compares the period's last UTC day with
the day before, and says so.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal, localcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendstream.config import WarehouseConfig
from spendstream.errors import ConfigError
from spendstream.instants import parse_instant
from spendstream.producers.event import EARLIEST_TS
from spendstream.warehouse.charts import Marker
from spendstream.warehouse.queries import BY_NAME, filtered_sql
from spendstream.warehouse.report_page import (
    ALERT_COLORS,
    BREAKER_COLOR,
    OTHER_TEAMS,
    TOP_N,
    clip,
    render,
    span_text,
)
from spendstream.wording import plural

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "Comparison",
    "Period",
    "ReportData",
    "ReportFilter",
    "apply_filter",
    "default_period",
    "gather",
    "parse_instant",
    "render",
    "write_report",
]

MAX_TEAMS = 7
TOP_SESSIONS = 6
MAX_TREE_NODES = 12
MAX_CACHE_FEATURES = 6
MAX_SPAN = timedelta(days=20 * 365)  # ~1040 weekly buckets
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)
_ZERO = Decimal(0)
_NANO = Decimal("1e-9")
_CTX = Context(prec=60)


@dataclass(frozen=True, slots=True)
class Period:
    since: datetime
    until: datetime

    @property
    def previous(self) -> Period:
        try:
            return Period(self.since - (self.until - self.since), self.since)
        except OverflowError:  # a period from near the year 1: the one before starts there
            return Period(datetime(1, 1, 1, tzinfo=UTC), self.since)

    @property
    def bucket(self) -> str:
        """The time bucket of the charts: hours up to 4 days, then days, then weeks."""
        span = self.until - self.since
        if span <= timedelta(days=4):
            return "hour"
        return "day" if span <= timedelta(days=120) else "week"


@dataclass(frozen=True, slots=True)
class ReportFilter:
    """Which calls the page covers: all (the default), or those of a team, feature or scope."""

    team: str | None = None
    feature: str | None = None
    scope: str | None = None  # any scope form: team:t, feature:f, api_key:k, session:s ...

    def fields(self) -> dict[str, str]:
        """Event field -> value that every fact shown must have."""
        from spendstream.scopes import scope_fields

        out = scope_fields(self.scope) if self.scope else {}
        if self.team is not None:
            out["team"] = self.team
        if self.feature is not None:
            out["feature"] = self.feature
        return out

    def describe(self) -> str:
        return ", ".join(f"{k} = {v}" for k, v in self.fields().items())


def apply_filter(con: duckdb.DuckDBPyConnection, flt: ReportFilter) -> None:
    """Shadow the fact, alert and breaker views with ``flt``'s rows (temporary, this session).

    An alert or breaker belongs to the filter when its scope is one of the filter's values
    (``team:search`` for team = search) or, for alerts, when its details name them.
    """
    fields = flt.fields()
    if not fields:
        return
    from spendstream.scopes import SCOPE_FIELDS

    def lit(value: str) -> str:  # CREATE VIEW takes no parameters: a standard SQL literal
        return "'" + value.replace("'", "''") + "'"

    kind_of = {f: k for k, f in SCOPE_FIELDS.items()}
    scopes = [lit(f"{kind_of[f]}:{v}") for f, v in fields.items()]
    where = {
        "usage_facts": " AND ".join(f'"{f}" = {lit(v)}' for f, v in fields.items()),
        "alerts": " OR ".join(
            [f"scope = {s}" for s in scopes]
            + [f"details['{f}'] = {lit(v)}" for f, v in fields.items()]
        ),
        "breaker_events": " OR ".join(f"scope = {s}" for s in scopes),
    }
    (db,) = con.execute("SELECT current_database()").fetchone() or ("main",)
    for view, condition in where.items():
        con.execute(
            f'CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM "{db}".main.{view} '
            f"WHERE {condition}"
        )


@dataclass(frozen=True, slots=True)
class Comparison:
    """This period's total against an earlier one, and the features that moved most."""

    label: str
    before: Period
    after: Period
    before_usd: Decimal
    after_usd: Decimal
    movers: list[tuple[str, Decimal, Decimal]]  # (team / feature, before, after)

    @property
    def change_pct(self) -> Decimal | None:
        if not self.before_usd:
            return None
        return ((self.after_usd - self.before_usd) / self.before_usd * 100).quantize(Decimal("0.1"))


@dataclass(slots=True)
class ReportData:
    """Every aggregate the page shows; nothing here grows with the number of facts."""

    period: Period
    generated_at: datetime
    total_usd: Decimal = _ZERO
    calls: int = 0
    unpriced_calls: int = 0
    alerts: int = 0
    breaker_openings_count: int = 0
    comparison: Comparison | None = None
    buckets: list[datetime] = field(default_factory=list)
    team_series: list[tuple[str, list[Decimal]]] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    anomaly_buckets: list[datetime] = field(default_factory=list)
    alert_kinds: list[tuple[Any, ...]] = field(default_factory=list)
    breaker_openings: list[tuple[Any, ...]] = field(default_factory=list)
    # (name, cost of the priced calls, calls, unpriced calls)
    top_features: list[tuple[str, Decimal, int, int]] = field(default_factory=list)
    top_models: list[tuple[str, Decimal, int, int]] = field(default_factory=list)
    top_api_keys: list[tuple[str, Decimal, int, int]] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    unit_features: list[tuple[Any, ...]] = field(default_factory=list)
    unit_totals: list[tuple[Any, ...]] = field(default_factory=list)
    cache_series: list[tuple[str, list[float | None]]] = field(default_factory=list)
    retry_rows: list[tuple[str, Decimal, Decimal, int, int]] = field(default_factory=list)
    split_rows: list[tuple[str, list[Decimal]]] = field(default_factory=list)
    filter_text: str = ""  # "team = search" when the page covers part of the calls


# -- reading ------------------------------------------------------------------------------


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def default_period(
    con: duckdb.DuckDBPyConnection, since: datetime | None, until: datetime | None
) -> Period:
    """The given bounds, else whole UTC days around the facts (today if there are none)."""
    first, last = con.execute("SELECT min(ts), max(ts) FROM usage_facts").fetchone() or (
        None,
        None,
    )
    today = datetime.now(UTC).date()
    start = _midnight(_utc(first).date() if first else today)
    end = _midnight((_utc(last).date() if last else today) + timedelta(days=1))
    s = _utc(since) if since else start
    u = _utc(until) if until else max(end, min(s, _LATEST) + timedelta(hours=1))
    if max(s, u) > _LATEST:
        # Months and weeks past it do not exist (9999 is a datetime's last year); no fact
        # can be dated there anyway (docs/bounds.md).
        raise ConfigError("the report's since and until are at most 9999-01-01")
    if s < EARLIEST_TS < u:
        s = EARLIEST_TS  # no fact is from before (docs/bounds.md): "since 2000" means all
    if u - s > MAX_SPAN:
        # Weekly buckets over centuries (since 0001-01-01) were half a million chart points,
        # and stepping them overflowed at the year 9999.
        raise ConfigError(
            f"the period from {s.date().isoformat()} to {u.date().isoformat()} is longer "
            f"than the report charts ({MAX_SPAN.days // 365} years of weekly buckets): give a "
            "later since or an earlier until (no fact is from before 2015)"
        )
    return Period(s, u)


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: Any) -> tuple[Any, ...]:
    row = con.execute(sql, params).fetchone()
    assert row is not None
    return row


def _total(con: duckdb.DuckDBPyConnection, p: Period) -> tuple[Decimal, int, int]:
    usd_, calls, unpriced = _one(
        con,
        "SELECT coalesce(sum(cost_usd), 0), count(*), count(*) FILTER (WHERE NOT priced) "
        "FROM usage_facts WHERE ts >= $s AND ts < $u",
        {"s": p.since, "u": p.until},
    )
    return Decimal(usd_), int(calls), int(unpriced)


def _comparison(con: duckdb.DuckDBPyConnection, p: Period, total: Decimal) -> Comparison | None:
    prev = p.previous
    before_usd, before_calls, _ = _total(con, prev)
    if before_calls:
        label = f"the previous period ({span_text(prev)})"
        before, after, after_usd = prev, p, total
    else:
        last = _one(
            con,
            "SELECT max(ts) FROM usage_facts WHERE ts >= $s AND ts < $u",
            {"s": p.since, "u": p.until},
        )[0]
        if last is None:
            return None
        day = _midnight(_utc(last).date())
        after = Period(max(day, p.since), min(day + timedelta(days=1), p.until))
        before = Period(after.since - timedelta(days=1), after.since)
        if before.since < p.since:
            return None
        before_usd = _total(con, before)[0]
        after_usd = _total(con, after)[0]
        label = (
            f"the day before (no facts before {p.since:%Y-%m-%d}, so "
            f"{after.since:%Y-%m-%d} is compared with {before.since:%Y-%m-%d})"
        )
    rows = con.execute(
        """
        SELECT coalesce(team, '(untagged)') || ' / ' || coalesce(feature, '(no feature)') AS k,
               coalesce(sum(cost_usd) FILTER (WHERE ts < $b1), 0) AS before_usd,
               coalesce(sum(cost_usd) FILTER (WHERE ts >= $a0), 0) AS after_usd
        FROM usage_facts
        WHERE (ts >= $b0 AND ts < $b1) OR (ts >= $a0 AND ts < $a1)
        GROUP BY k
        ORDER BY abs(after_usd - before_usd) DESC, k
        LIMIT 3""",
        {"b0": before.since, "b1": before.until, "a0": after.since, "a1": after.until},
    ).fetchall()
    movers = [(str(k), Decimal(b), Decimal(a)) for k, b, a in rows]
    return Comparison(label, before, after, Decimal(before_usd), after_usd, movers)


def _buckets(p: Period) -> list[datetime]:
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}
    if p.bucket == "hour":
        t = p.since.replace(minute=0, second=0, microsecond=0)
    else:
        t = _midnight(p.since.date())
        if p.bucket == "week":
            t -= timedelta(days=t.weekday())  # DuckDB's date_trunc('week') starts on Monday
    out = []
    while t < p.until:
        out.append(t)
        t += step[p.bucket]
    return out


def _named(
    con: duckdb.DuckDBPyConnection, name: str, p: Period, limit: int | None
) -> list[tuple[Any, ...]]:
    sql, params = filtered_sql(
        BY_NAME[name], {"since": p.since.isoformat(), "until": p.until.isoformat()}, limit
    )
    return con.execute(sql, params).fetchall()


CUBE = "_report_cube"


def _cube(con: duckdb.DuckDBPyConnection, p: Period) -> None:
    """The period's facts summed per bucket and attribution, in a temporary table.

    One scan of the facts (the costly part at 10M: DECIMAL sums) feeds every chart that
    needs no distinct count; the cube holds at most buckets x teams x features x models
    x api keys rows, usually far fewer.
    """
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {CUBE} AS
        SELECT date_trunc('{p.bucket}', ts) AS b,
               coalesce(team, '(untagged)') AS team,
               coalesce(feature, '(no feature)') AS feature,
               provider, model,
               coalesce(api_key_id, '(no api key)') AS api_key,
               count(*) AS calls,
               count(*) FILTER (WHERE NOT priced) AS unpriced,
               coalesce(sum(cost_usd), 0) AS cost,
               coalesce(sum(input_cost_usd), 0) AS input_cost,
               coalesce(sum(cache_read_cost_usd), 0) AS cache_read_cost,
               coalesce(sum(cache_write_cost_usd), 0) AS cache_write_cost,
               coalesce(sum(output_cost_usd), 0) AS output_cost,
               sum(input_tokens) AS input_tokens,
               sum(cache_read_tokens) AS cache_read_tokens
        FROM usage_facts WHERE ts >= $s AND ts < $u
        GROUP BY ALL
        """,
        {"s": p.since, "u": p.until},
    )


def gather(con: duckdb.DuckDBPyConnection, period: Period) -> ReportData:
    """Every aggregate of the page, computed in DuckDB over ``period``."""
    p = period
    data = ReportData(period=p, generated_at=datetime.now(UTC).replace(microsecond=0))
    rng = {"s": p.since, "u": p.until}
    b = p.bucket
    _cube(con, p)
    total, calls, unpriced = _one(
        con,
        f"SELECT coalesce(sum(cost), 0), coalesce(sum(calls), 0), coalesce(sum(unpriced), 0) FROM {CUBE}",
        None,
    )
    data.total_usd, data.calls, data.unpriced_calls = Decimal(total), int(calls), int(unpriced)
    data.comparison = _comparison(con, p, data.total_usd)
    data.buckets = _buckets(p)
    index = {t: i for i, t in enumerate(data.buckets)}

    teams = [
        str(t)
        for (t,) in con.execute(
            f"SELECT team FROM {CUBE} GROUP BY team ORDER BY sum(cost) DESC, team"
        ).fetchall()
    ]
    shown = teams if len(teams) <= MAX_TEAMS + 1 else teams[:MAX_TEAMS]
    names = shown + ([OTHER_TEAMS] if len(teams) > len(shown) else [])
    series = {n: [_ZERO] * len(data.buckets) for n in names}
    for bucket, team, cost in con.execute(
        f"SELECT b, team, sum(cost) FROM {CUBE} GROUP BY ALL"
    ).fetchall():
        i = index.get(_utc(bucket))
        if i is not None:
            key = team if team in series else OTHER_TEAMS
            series[key][i] += Decimal(cost)
    data.team_series = [(n, series[n]) for n in names]

    # One marker per bucket, coloured by its most severe alert; the title lists them all.
    for bucket, kinds, worst in con.execute(
        f"SELECT date_trunc('{b}', ts) AS b, "
        "string_agg(kind || ' x' || n || ' (' || scopes || ')', '; ' ORDER BY n DESC, kind), "
        "arg_max(kind, rank) FROM ("
        f"  SELECT date_trunc('{b}', ts) AS ts, kind, count(*) AS n, "
        "   max(CASE severity WHEN 'critical' THEN 2 WHEN 'warning' THEN 1 ELSE 0 END) AS rank, "
        "   string_agg(DISTINCT scope, ', ') AS scopes "
        "  FROM alerts WHERE ts >= $s AND ts < $u AND kind <> 'hourly_anomaly' GROUP BY ALL"
        ") GROUP BY ALL ORDER BY b",
        rng,
    ).fetchall():
        data.markers.append(
            Marker(
                _utc(bucket),
                f"alerts at {bucket:%Y-%m-%d %H:%M}: {clip(kinds, 300)}",
                "alert",
                ALERT_COLORS.get(worst, "#d62728"),
            )
        )
    for bucket, n, scopes in con.execute(
        f"SELECT date_trunc('{b}', ts) AS b, count(*), "
        "string_agg(DISTINCT scope || ' (' || reason || ')', ', ') FROM breaker_events "
        "WHERE ts >= $s AND ts < $u AND state = 'open' GROUP BY ALL ORDER BY b",
        rng,
    ).fetchall():
        data.markers.append(
            Marker(
                _utc(bucket),
                f"{plural(n, 'breaker')} opened at {bucket:%Y-%m-%d %H:%M}: {clip(scopes, 160)}",
                "breaker",
                BREAKER_COLOR,
            )
        )
    data.anomaly_buckets = [
        _utc(t)
        for (t,) in con.execute(
            f"SELECT DISTINCT date_trunc('{b}', ts) FROM alerts "
            "WHERE ts >= $s AND ts < $u AND kind = 'hourly_anomaly' ORDER BY 1",
            rng,
        ).fetchall()
    ]
    data.alert_kinds = con.execute(
        "SELECT kind, count(*), min(ts), max(ts), count(DISTINCT scope), "
        "arg_max(scope || ': ' || message, severity = 'critical') "
        "FROM alerts WHERE ts >= $s AND ts < $u GROUP BY kind ORDER BY count(*) DESC, kind",
        rng,
    ).fetchall()
    data.alerts, data.breaker_openings_count = _one(
        con,
        "SELECT (SELECT count(*) FROM alerts WHERE ts >= $s AND ts < $u), "
        "(SELECT count(*) FROM breaker_events WHERE ts >= $s AND ts < $u AND state = 'open')",
        rng,
    )
    data.breaker_openings = con.execute(
        "SELECT ts, scope, reason FROM breaker_events WHERE ts >= $s AND ts < $u "
        "AND state = 'open' ORDER BY ts LIMIT 12",
        rng,
    ).fetchall()

    def top(key: str) -> list[tuple[str, Decimal, int, int]]:
        rows = con.execute(
            f"SELECT {key} AS k, sum(cost) AS c, sum(calls), sum(unpriced) FROM {CUBE} "
            f"GROUP BY k ORDER BY c DESC, k LIMIT {TOP_N}"
        ).fetchall()
        return [(str(k), Decimal(c), int(n), int(u)) for k, c, n, u in rows]

    data.top_features = top("team || ' / ' || feature")
    data.top_models = top("provider || '/' || model")
    data.top_api_keys = top("api_key")
    data.sessions = _sessions(con, p)
    data.unit_features, data.unit_totals = _unit_economics(con, p)
    data.cache_series = _cache_series(con, index)
    data.retry_rows = [
        (f"{t or '(untagged)'} / {f or '(no feature)'}", Decimal(oc), Decimal(share or 0), r, fl)
        for t, f, _calls, r, fl, _c, _rc, _fc, oc, share in _named(con, "retry_overhead", p, TOP_N)
        if oc
    ]
    data.split_rows = [
        (str(k), [Decimal(x) for x in parts])
        for k, *parts in con.execute(
            f"SELECT team || ' / ' || feature AS k, sum(input_cost), sum(cache_read_cost), "
            f"sum(cache_write_cost), sum(output_cost) FROM {CUBE} GROUP BY k "
            f"ORDER BY sum(cost) DESC, k LIMIT {TOP_N}"
        ).fetchall()
    ]
    return data


def _sessions(con: duckdb.DuckDBPyConnection, p: Period) -> list[dict[str, Any]]:
    cols = [
        "session_id", "team", "sessions", "sub_agent_sessions", "max_depth", "calls",
        "own_cost_usd", "sub_agent_cost_usd", "tree_cost_usd", "sub_agent_overhead_share",
        "first_ts", "last_ts",
    ]  # fmt: skip
    roots = [dict(zip(cols, r, strict=True)) for r in _named(con, "top_sessions", p, TOP_SESSIONS)]
    if not roots:
        return roots
    sql, params = filtered_sql(
        BY_NAME["session_tree"], {"since": p.since.isoformat(), "until": p.until.isoformat()}, None
    )
    params["roots"] = [r["session_id"] for r in roots]
    nodes = con.execute(
        "SELECT root_session_id, session_id, depth, calls, cost_usd FROM ("
        + sql
        + ") AS t WHERE list_contains($roots, root_session_id) "
        "QUALIFY row_number() OVER (PARTITION BY root_session_id ORDER BY path) <= "
        + str(MAX_TREE_NODES)
        + " ORDER BY root_session_id, path",
        params,
    ).fetchall()
    for r in roots:
        r["tree"] = [n[1:] for n in nodes if n[0] == r["session_id"]]
    return roots


def _unit_economics(
    con: duckdb.DuckDBPyConnection, p: Period
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Per month and feature: cost per active user, and its share of revenue per active user.

    Unit economics are monthly by nature, so every calendar month the period touches is
    taken whole. Revenue per active user is the month's loaded revenue over the month's
    distinct users; a feature's ratio is what it costs per user it served against that.
    """
    first = p.since.date().replace(day=1)
    last = (p.until - timedelta(microseconds=1)).date().replace(day=1)
    after = (last + timedelta(days=32)).replace(day=1)
    totals = con.execute(
        "SELECT month, level, key, revenue_usd, ai_cost_usd, ai_cost_ratio, band "
        "FROM unit_economics WHERE month BETWEEN $m0 AND $m1 AND level IN ('total', 'plan') "
        "ORDER BY month DESC, level DESC, key",
        {"m0": first, "m1": last},
    ).fetchall()
    revenue = {r[0]: Decimal(r[3]) for r in totals if r[1] == "total" and r[3] is not None}
    # Exact distinct users are the report's costliest aggregate at scale: count them on the
    # months' partitions directly (the unit_costs / feature_user_month views also count
    # every distinct request), and per month only where revenue needs them.
    per_feature = con.execute(
        """
        SELECT CAST(date_trunc('month', date) AS DATE) AS month, team, feature,
               count(DISTINCT user_id) AS users,
               -- NULL when no call was priced: "unpriced", not $0
               CASE WHEN bool_or(priced) THEN coalesce(sum(cost_usd), 0) END
        FROM usage_facts WHERE date >= $m0 AND date < $after
        GROUP BY ALL HAVING users > 0
        """,
        {"m0": first, "after": after},
    ).fetchall()
    month_users: dict[date, int] = {}
    if revenue:
        month_users = dict(
            con.execute(
                "SELECT CAST(date_trunc('month', date) AS DATE) AS month, "
                "count(DISTINCT user_id) FROM usage_facts "
                "WHERE date >= $m0 AND date < $after AND list_contains($months, "
                "CAST(date_trunc('month', date) AS DATE)) GROUP BY ALL",
                {"m0": first, "after": after, "months": list(revenue)},
            ).fetchall()
        )
    features: list[tuple[Any, ...]] = []
    with localcontext(_CTX):
        for month, team, feature, users, cost in per_feature:
            rev_per_user = None
            if month in revenue and month_users.get(month):
                rev_per_user = (revenue[month] / month_users[month]).quantize(_NANO)
            key = f"{team or '(untagged)'} / {feature or '(no feature)'}"
            if cost is None:
                features.append((month, key, users, None, None, rev_per_user))
                continue
            per_user = (Decimal(cost) / users).quantize(_NANO)
            features.append((month, key, users, Decimal(cost), per_user, rev_per_user))
    features.sort(key=lambda r: (-r[0].toordinal(), -(r[4] if r[4] is not None else -1), r[1]))
    return features, totals


def _cache_series(
    con: duckdb.DuckDBPyConnection, index: dict[datetime, int]
) -> list[tuple[str, list[float | None]]]:
    names = [
        str(k)
        for (k,) in con.execute(
            f"SELECT feature FROM {CUBE} GROUP BY feature HAVING sum(cache_read_tokens) > 0 "
            f"ORDER BY sum(input_tokens) DESC, feature LIMIT {MAX_CACHE_FEATURES}"
        ).fetchall()
    ]
    series: dict[str, list[float | None]] = {n: [None] * len(index) for n in names}
    if names:
        rows = con.execute(
            f"SELECT feature, b, sum(cache_read_tokens) / nullif(sum(input_tokens), 0) "
            f"FROM {CUBE} WHERE list_contains($names, feature) GROUP BY ALL",
            {"names": names},
        ).fetchall()
        for k, bucket, rate in rows:
            i = index.get(_utc(bucket))
            if i is not None and rate is not None:
                series[k][i] = float(rate)
    return [(n, series[n]) for n in names]


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


def write_report(
    workdir: Path,
    out: Path,
    since: datetime | None = None,
    until: datetime | None = None,
    flt: ReportFilter | None = None,
    config: WarehouseConfig | None = None,
    note: Callable[[str], None] | None = None,
) -> Path:
    """Aggregate the warehouse of ``workdir`` over [since, until) into ``out`` (atomically).
    ``note`` hears what the reader should know (a filter no fact matches)."""
    from spendstream.warehouse.reading import connect, unmatched_value

    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{out} is a directory: name the page's file, e.g. {out / 'report.html'}")
    con = connect(Path(workdir), config)
    try:
        if flt is not None and note is not None:
            problem = unmatched_value(con, flt.fields(), "the report is empty")
            if problem is not None:
                note(problem)
        apply_filter(con, flt or ReportFilter())
        data = gather(con, default_period(con, since, until))
        data.filter_text = (flt or ReportFilter()).describe()
        if note is not None and data.calls == 0 and (since or until):
            # An empty page, unsaid, for a --since after the last fact (or a typo'd year).
            first, last = con.execute("SELECT min(ts), max(ts) FROM usage_facts").fetchone() or (
                None,
                None,
            )
            if first is not None:
                note(
                    f"no facts from {_stamp(data.period.since)} to {_stamp(data.period.until)}: "
                    f"the report is empty (the facts are from {_stamp(_utc(first))} "
                    f"to {_stamp(_utc(last))})"
                )
    finally:
        con.close()
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(render(data), encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    return out
