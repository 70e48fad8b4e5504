"""What ``gather`` hands the report page, on small warehouses built for one edge each.

No browser: these check the gathered ``ReportData`` (real warehouse, real DuckDB). Every
expectation is worked out from the facts written, in exact Decimal, over the half-open
period ``[since, until)``, not read back from the code under test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from spendstream.records import Fact
from spendstream.warehouse import Warehouse
from spendstream.warehouse.reading import connect
from spendstream.warehouse.report import MAX_TEAMS, Period, ReportData, gather
from spendstream.warehouse.report_page import OTHER_TEAMS, TOP_N, cost_text
from spendstream.warehouse.revenue import load_revenue
from tests.warehouse.factories import T0, days, fact

DAY = T0.replace(hour=0)  # 2026-03-02 00:00 UTC, a Monday
H = timedelta(hours=1)


def _gather(workdir: Path, facts: Sequence[Fact], period: Period, revenue: str = "") -> ReportData:
    with Warehouse(workdir) as wh:
        wh.commit(facts=list(facts))
        if revenue:
            csv = workdir / "revenue.csv"
            csv.write_text(revenue)
            load_revenue(wh, csv)
        wh.ensure_views()
    con = connect(workdir)
    try:
        return gather(con, period)
    finally:
        con.close()


def _cost(facts: Sequence[Fact], since: datetime, until: datetime) -> Decimal:
    """Oracle: the priced cost of the facts in [since, until)."""
    return sum(
        (f.cost.cost_usd for f in facts if f.cost and since <= f.event.ts < until), Decimal(0)
    )


def _by(
    facts: Sequence[Fact], key: Callable[[Fact], str], p: Period
) -> dict[str, tuple[Decimal, int, int]]:
    """Oracle: key -> (priced cost, calls, unpriced calls) of the facts in the period."""
    out: dict[str, tuple[Decimal, int, int]] = {}
    for f in facts:
        if p.since <= f.event.ts < p.until:
            c, n, u = out.get(key(f), (Decimal(0), 0, 0))
            cost = f.cost.cost_usd if f.cost else Decimal(0)
            out[key(f)] = (c + cost, n + 1, u + (f.cost is None))
    return out


def _feature(f: Fact) -> str:
    return f"{f.event.team} / {f.event.feature}"


def test_the_previous_period_ends_where_this_one_starts(workdir: Path) -> None:
    # A fact at exactly `since` is this period's, not the previous one's; one at exactly
    # `until` is neither's.
    p = Period(DAY + days(1), DAY + days(2))
    facts = [
        fact(DAY + 6 * H, "1.00", team="a", feature="x"),
        fact(p.since, "2.00", team="a", feature="x"),
        fact(p.since + 5 * H, "4.00", team="a", feature="y"),
        fact(p.until, "8.00", team="a", feature="x"),
    ]
    data = _gather(workdir, facts, p)
    assert data.total_usd == _cost(facts, p.since, p.until)
    assert data.calls == 2
    c = data.comparison
    assert c is not None and "previous period" in c.label
    assert (c.before, c.after) == (p.previous, p)
    assert c.before_usd == _cost(facts, p.previous.since, p.previous.until)
    assert c.after_usd == data.total_usd
    assert c.change_pct == ((c.after_usd - c.before_usd) / c.before_usd * 100).quantize(
        Decimal("0.1")
    )
    movers = {k: (b, a) for k, b, a in c.movers}
    feature = {k: [f for f in facts if _feature(f) == k] for k in ("a / x", "a / y")}
    assert movers == {
        k: (_cost(fs, p.previous.since, p.since), _cost(fs, p.since, p.until))
        for k, fs in feature.items()
    }


def test_no_change_is_computed_against_a_previous_period_of_unpriced_calls(
    workdir: Path,
) -> None:
    p = Period(DAY + days(1), DAY + days(2))
    facts = [fact(DAY + 6 * H, None), fact(p.since + H, "3.00")]
    data = _gather(workdir, facts, p)
    c = data.comparison
    assert c is not None and "previous period" in c.label
    assert (c.before_usd, c.after_usd) == (Decimal(0), Decimal("3.00"))
    assert c.change_pct is None  # not a division by zero


@pytest.mark.parametrize(
    "until",
    [DAY + days(2), DAY + days(1) + 12 * H],
    ids=["whole-days", "ends-mid-day"],
)
def test_a_first_report_compares_its_last_day_inside_the_period_with_the_day_before(
    workdir: Path, until: datetime
) -> None:
    p = Period(DAY, until)
    facts = [
        fact(DAY, "0.50"),  # at exactly `since`: nothing lies before the period
        fact(DAY + 3 * H, "1.00"),
        fact(DAY + days(1), "2.00"),  # at exactly the last day's midnight: that day's
        fact(DAY + days(1) + 3 * H, "4.00"),
        fact(until, "8.00"),  # at exactly `until`: after the period
        fact(DAY + days(1) + 18 * H, "16.00"),  # the last day's, but after `until` if mid-day
    ]
    data = _gather(workdir, facts, p)
    assert data.total_usd == _cost(facts, p.since, p.until)
    c = data.comparison
    assert c is not None and "the day before" in c.label
    # The last UTC day with facts in the period, cut at `until`, against the whole day before.
    after = Period(DAY + days(1), min(DAY + days(2), until))
    before = Period(DAY, DAY + days(1))
    assert (c.before, c.after) == (before, after)
    assert c.before_usd == _cost(facts, before.since, before.until)
    assert c.after_usd == _cost(facts, after.since, after.until)


@pytest.mark.parametrize(
    ("until", "months"),
    [
        (datetime(2026, 4, 1, tzinfo=UTC), [date(2026, 3, 1)]),
        (datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC), [date(2026, 4, 1), date(2026, 3, 1)]),
    ],
    ids=["until-at-a-month-start", "one-second-into-april"],
)
def test_unit_economics_take_the_calendar_months_the_period_touches(
    workdir: Path, until: datetime, months: list[date]
) -> None:
    # A period [03-02, 04-01) touches March only; a second more touches April too. Months
    # are taken whole: the fact of 03-01, before `since`, counts.
    p = Period(DAY, until)
    facts = [
        fact(datetime(2026, 3, 1, 9, tzinfo=UTC), "1.00", team="a", feature="x", user_id="u1"),
        fact(DAY + days(8), "2.00", team="a", feature="x", user_id="u2"),
        fact(datetime(2026, 4, 1, tzinfo=UTC), "4.00", team="a", feature="x", user_id="u3"),
        fact(datetime(2026, 4, 20, tzinfo=UTC), "8.00", team="a", feature="x", user_id="u3"),
    ]
    revenue = "month,plan,user_id,revenue_usd\n2026-03,,,100\n2026-04,,,50\n"
    data = _gather(workdir, facts, p, revenue)
    assert [r[0] for r in data.unit_features] == months  # latest month first
    assert sorted({r[0] for r in data.unit_totals}, reverse=True) == months
    for month, key, users, cost, per_user, rev_per_user in data.unit_features:
        mine = [f for f in facts if f.event.ts.date().replace(day=1) == month]
        assert key == "a / x"
        assert users == len({f.event.user_id for f in mine})
        assert cost == _cost(
            mine, datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
        )
        assert per_user == (cost / users).quantize(Decimal("1e-9"))
        assert rev_per_user == (Decimal(100 if month.month == 3 else 50) / users).quantize(
            Decimal("1e-9")
        )


def test_a_feature_with_no_priced_call_is_unpriced_not_zero_dollars(workdir: Path) -> None:
    p = Period(DAY, DAY + days(1))
    facts = [
        fact(DAY + H, "0.30", team="a", feature="priced", user_id="u1"),
        fact(DAY + H, "0.10", team="a", feature="priced", user_id="u2"),
        fact(DAY + H, "0.10", team="a", feature="mixed", user_id="u3"),
        fact(DAY + H, None, team="a", feature="mixed", user_id="u4"),
        fact(DAY + H, None, team="a", feature="dark", user_id="u5"),
        fact(DAY + 2 * H, None, team="a", feature="dark", user_id="u6"),
        # No user: no cost per active user to show (and no division by zero users).
        fact(DAY + H, "1.00", team="a", feature="anonymous"),
    ]
    data = _gather(workdir, facts, p)
    m = date(2026, 3, 1)
    q = Decimal("1e-9")
    # Costliest per user first; the unpriced feature last, with no cost rather than $0.
    assert data.unit_features == [
        (m, "a / priced", 2, Decimal("0.40"), (Decimal("0.40") / 2).quantize(q), None),
        (m, "a / mixed", 2, Decimal("0.10"), (Decimal("0.10") / 2).quantize(q), None),
        (m, "a / dark", 2, None, None, None),
    ]
    assert cost_text(data.unit_features[-1][3]) == "unpriced"
    # The drivers carry the unpriced count, which the page shows as "unpriced".
    oracle = _by(facts, _feature, p)
    assert {k: (c, n, u) for k, c, n, u in data.top_features} == oracle
    assert data.unpriced_calls == sum(u for _, _, u in oracle.values()) == 3
    assert cost_text(*oracle["a / dark"]) == "unpriced"


@pytest.mark.parametrize("n_teams", [MAX_TEAMS + 1, MAX_TEAMS + 2])
def test_the_spend_chart_folds_teams_past_the_top_ones_into_other_teams(
    workdir: Path, n_teams: int
) -> None:
    # Team i costs i + 1 dollars, spread over two hours. An "other teams" of one team would
    # hide its name for nothing: up to MAX_TEAMS + 1 teams are all named.
    p = Period(DAY, DAY + days(1))
    facts = [
        fact(DAY + (h + 1) * H, f"{(i + 1) / 2:.2f}", team=f"t{i}", feature="f")
        for i in range(n_teams)
        for h in range(2)
    ]
    data = _gather(workdir, facts, p)
    per_team = {t: c for t, (c, _, _) in _by(facts, lambda f: str(f.event.team), p).items()}
    ranked = sorted(per_team, key=lambda t: -per_team[t])
    shown = ranked if n_teams <= MAX_TEAMS + 1 else ranked[:MAX_TEAMS]
    names = [n for n, _ in data.team_series]
    assert names == shown + ([OTHER_TEAMS] if len(shown) < n_teams else [])
    sums = {n: sum(s, Decimal(0)) for n, s in data.team_series}
    for t in shown:
        assert sums[t] == per_team[t]
    assert sum(sums.values(), Decimal(0)) == data.total_usd == _cost(facts, p.since, p.until)


def test_drivers_and_the_cost_split_show_the_top_features_by_cost(workdir: Path) -> None:
    # One feature more than the charts show; the names sort the other way round from the
    # costs, so an order by name is seen.
    p = Period(DAY, DAY + days(1))
    n = TOP_N + 1
    facts = [
        fact(DAY + H, f"{i + 1}.25", team="a", feature=f"f{i:02d}", output_tokens=10)
        for i in range(n)
    ]
    data = _gather(workdir, facts, p)
    oracle = _by(facts, _feature, p)
    top = sorted(oracle, key=lambda k: -oracle[k][0])[:TOP_N]
    assert [(k, c, calls, u) for k, c, calls, u in data.top_features] == [
        (k, *oracle[k]) for k in top
    ]
    assert [k for k, _ in data.split_rows] == top
    for k, parts in data.split_rows:
        assert sum(parts, Decimal(0)) == oracle[k][0]


def test_weekly_buckets_start_on_mondays_and_hold_every_dollar(workdir: Path) -> None:
    # Over 120 days the chart goes weekly; the period starts on a Wednesday.
    since = DAY + days(2)
    p = Period(since, since + days(150))
    assert since.weekday() == 2 and p.bucket == "week"
    facts = [fact(since + days(k) + 5 * H, "1.10", team="a", feature="x") for k in (0, 40, 149)]
    data = _gather(workdir, facts, p)
    assert data.buckets[0] == DAY and all(b.weekday() == 0 for b in data.buckets)
    assert data.buckets[-1] < p.until <= data.buckets[-1] + days(7)
    [(_, series)] = data.team_series
    assert sum(series, Decimal(0)) == data.total_usd == _cost(facts, p.since, p.until)


@pytest.mark.parametrize(
    ("span", "bucket"),
    [
        (days(4), "hour"),
        (days(4) + timedelta(seconds=1), "day"),
        (days(120), "day"),
        (days(120) + timedelta(seconds=1), "week"),
    ],
)
def test_chart_buckets_are_hourly_up_to_4_days_and_daily_up_to_120(
    span: timedelta, bucket: str
) -> None:
    assert Period(DAY, DAY + span).bucket == bucket


def test_the_cache_chart_shows_only_features_that_read_the_cache(workdir: Path) -> None:
    p = Period(DAY, DAY + days(1))
    facts = [
        fact(DAY + H, team="a", feature="cached", input_tokens=1000, cache_read_tokens=250),
        fact(DAY + H, team="a", feature="cached", input_tokens=3000, cache_read_tokens=0),
        fact(DAY + 2 * H, team="a", feature="cached", input_tokens=2000, cache_read_tokens=0),
        # More input tokens, but never a cache read: not on the chart.
        fact(DAY + H, team="a", feature="uncached", input_tokens=90_000),
    ]
    data = _gather(workdir, facts, p)
    [(name, rates)] = data.cache_series
    assert name == "cached"
    assert rates[1] == 250 / 4000 and rates[2] == 0.0
    assert [r for i, r in enumerate(rates) if i not in (1, 2)] == [None] * (len(rates) - 2)


def test_retry_overhead_lists_only_features_that_paid_for_retries_or_failures(
    workdir: Path,
) -> None:
    p = Period(DAY, DAY + days(1))
    facts = [
        fact(DAY + H, "1.00", team="a", feature="flaky"),
        fact(DAY + H, "0.50", team="a", feature="flaky", attempt=2),
        fact(DAY + H, "0.25", team="a", feature="flaky", status="error"),
        fact(DAY + H, "9.00", team="a", feature="clean"),
    ]
    data = _gather(workdir, facts, p)
    # The share is the named query's (a DOUBLE rounded to 4 places).
    [(key, overhead, share, retries, failed)] = data.retry_rows
    assert (key, overhead, retries, failed) == ("a / flaky", Decimal("0.75"), 1, 1)
    assert float(share) == round(0.75 / 1.75, 4)


def test_the_first_breaker_openings_are_listed_earliest_first(workdir: Path) -> None:
    from tests.warehouse.factories import breaker

    p = Period(DAY, DAY + days(1))
    opened = [breaker(DAY + k * H, scope=f"api_key:k{k}") for k in range(14)]
    closed = breaker(DAY + 30 * timedelta(minutes=1), scope="api_key:k0", state="closed")
    with Warehouse(workdir) as wh:
        wh.commit(facts=[fact(DAY + H)], breaker_events=[*reversed(opened), closed])
        wh.ensure_views()
    con = connect(workdir)
    try:
        data = gather(con, p)
    finally:
        con.close()
    assert data.breaker_openings_count == len(opened)
    assert [(ts, s) for ts, s, _ in data.breaker_openings] == [(b.ts, b.scope) for b in opened[:12]]
    # The timeline marks each hour's openings, counted in words ("1 breaker", not "1 breaker(s)").
    labels = [m.label for m in data.markers if m.kind == "breaker"]
    assert len(labels) == len(opened)
    assert all(label.startswith("1 breaker opened at ") for label in labels)
