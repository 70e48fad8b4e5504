"""Every named query on a small data set whose answers were worked out by hand.

Seven calls in March 2026 (D1 = 03-02, D2 = 03-03); sessions sA > {sA1 > sA3, sA2} and sB:

    id  day team     feature model                   user cost  in    cache  session parent req att status plan reported
    F1  D1  search   sem     openai/gpt-5-mini       u1   1.00  1000  500    sA      -      r1  1   ok
    F2  D1  search   sem     openai/gpt-5-mini       u2   2.00  1000  0      sA1     sA     r2  1   error
    F3  D2  search   sem     openai/gpt-5-mini       u2   3.00  2000  1000   sA2     sA     r2  2   ok
    F4  D1  support  chat    anthropic/claude-s-4-5  u1   4.00  4000  3000   sB      -      r3  1   ok     pro  3.50
    F5  D1  -        -       anthropic/claude-s-4-5  u3   5.00  1000  0      -       -      -   1   ok     free 5.00
    F6  D1  shared   -       self-hosted/ft          u3   -     100   0      (unpriced)
    F7  D2  support  chat    anthropic/claude-s-4-5  u1   0.50  1000  0      sA3     sA1    r4  1   ok     pro
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from spendstream.warehouse import Warehouse
from spendstream.warehouse.queries import QUERIES
from spendstream.warehouse.reading import run_named, run_sql
from spendstream.warehouse.revenue import load_revenue
from tests.warehouse.factories import T0, fact

D1, D2 = T0, T0 + timedelta(days=1)
M = date(2026, 3, 1)
CLAUDE = {"provider": "anthropic", "model": "claude-sonnet-4-5"}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("known") / "work"
    facts = [
        fact(
            D1,
            "1.00",
            team="search",
            feature="sem",
            user_id="u1",
            cache_read_tokens=500,
            session_id="sA",
            request_id="r1",
        ),
        fact(
            D1,
            "2.00",
            team="search",
            feature="sem",
            user_id="u2",
            session_id="sA1",
            parent_session_id="sA",
            request_id="r2",
            status="error",
        ),
        fact(
            D2,
            "3.00",
            team="search",
            feature="sem",
            user_id="u2",
            input_tokens=2000,
            cache_read_tokens=1000,
            session_id="sA2",
            parent_session_id="sA",
            request_id="r2",
            attempt=2,
        ),
        fact(
            D1,
            "4.00",
            team="support",
            feature="chat",
            user_id="u1",
            input_tokens=4000,
            cache_read_tokens=3000,
            session_id="sB",
            request_id="r3",
            reported_cost_usd="3.50",
            tags={"plan": "pro"},
            **CLAUDE,
        ),
        fact(D1, "5.00", user_id="u3", reported_cost_usd="5.00", tags={"plan": "free"}, **CLAUDE),
        fact(
            D1,
            None,
            team="shared",
            user_id="u3",
            provider="self-hosted",
            model="ft",
            input_tokens=100,
            output_tokens=10,
        ),
        fact(
            D2,
            "0.50",
            team="support",
            feature="chat",
            user_id="u1",
            session_id="sA3",
            parent_session_id="sA1",
            request_id="r4",
            tags={"plan": "pro"},
            **CLAUDE,
        ),
    ]
    with Warehouse(workdir) as wh:
        wh.ensure_views()
        wh.commit(facts=facts[:3])
        wh.commit(facts=facts[3:])
        csv = workdir / "revenue.csv"
        csv.write_text(
            "month,plan,user_id,revenue_usd\n2026-03,,,100\n2026-03,pro,,20\n"
            "2026-03,free,,5\n2026-03,,u1,10\n"
        )
        load_revenue(wh, csv)
    return workdir


def rows(workdir: Path, name: str, **filters: Any) -> list[tuple[Any, ...]]:
    return run_named(workdir, name, filters)[1]


def col(workdir: Path, name: str, *columns: str, **filters: Any) -> list[tuple[Any, ...]]:
    names, data = run_named(workdir, name, filters)
    idx = [names.index(c) for c in columns]
    return [tuple(r[i] for i in idx) for r in data]


def d(x: str) -> Decimal:
    return Decimal(x)


def test_cost_by_team(loaded: Path) -> None:
    assert col(
        loaded, "cost_by_team", "team", "calls", "unpriced_calls", "cost_usd", "share_pct"
    ) == [
        ("search", 3, 0, d("6"), 38.71),
        ("(untagged)", 1, 0, d("5"), 32.26),
        ("support", 2, 0, d("4.5"), 29.03),
        ("shared", 1, 1, None, None),
    ]


def test_cost_by_feature(loaded: Path) -> None:
    assert col(loaded, "cost_by_feature", "team", "feature", "cost_usd") == [
        ("search", "sem", d("6")),
        (None, None, d("5")),
        ("support", "chat", d("4.5")),
        ("shared", None, None),
    ]


def test_cost_by_model(loaded: Path) -> None:
    assert col(loaded, "cost_by_model", "provider", "model", "calls", "cost_usd") == [
        ("anthropic", "claude-sonnet-4-5", 3, d("9.5")),
        ("openai", "gpt-5-mini", 3, d("6")),
        ("self-hosted", "ft", 1, None),
    ]


def test_cost_by_user(loaded: Path) -> None:
    assert col(loaded, "cost_by_user", "user_id", "calls", "cost_usd") == [
        ("u1", 3, d("5.5")),
        ("u2", 2, d("5")),
        ("u3", 2, d("5")),
    ]


def test_cost_by_day(loaded: Path) -> None:
    assert col(loaded, "cost_by_day", "day", "calls", "cost_usd") == [
        (D1.date(), 5, d("12")),
        (D2.date(), 2, d("3.5")),
    ]


def test_top_sessions_sums_sub_agent_trees(loaded: Path) -> None:
    assert col(
        loaded,
        "top_sessions",
        "session_id",
        "sessions",
        "sub_agent_sessions",
        "max_depth",
        "own_cost_usd",
        "sub_agent_cost_usd",
        "tree_cost_usd",
        "sub_agent_overhead_share",
    ) == [
        ("sA", 4, 3, 2, d("1"), d("5.5"), d("6.5"), 0.8462),
        ("sB", 1, 0, 0, d("4"), d("0"), d("4"), 0.0),
    ]


def test_a_session_of_unpriced_calls_has_no_cost_not_zero(tmp_path: Path) -> None:
    # It read $0.00 (coalesce), as if the calls were free; the report says "unpriced" for
    # a cost that is NULL, as cost_by_* give it.
    work = tmp_path / "w"
    with Warehouse(work) as wh:
        wh.ensure_views()
        wh.commit(
            facts=[
                fact(D1, None, session_id="dark"),
                fact(D1, None, session_id="dark-sub", parent_session_id="dark"),
                fact(D1, "0.25", session_id="lit"),
                fact(D1, None, session_id="mixed"),
                fact(D1, "0.50", session_id="mixed-sub", parent_session_id="mixed"),
            ]
        )
    assert col(work, "top_sessions", "session_id", "own_cost_usd", "tree_cost_usd") == [
        ("mixed", None, d("0.50")),
        ("lit", d("0.25"), d("0.25")),
        ("dark", None, None),  # unpriced sorts last, not as the cheapest
    ]
    tree = col(work, "session_tree", "session_id", "cost_usd")
    assert sorted(tree, key=lambda r: r[0]) == [
        ("dark", None),
        ("dark-sub", None),
        ("lit", d("0.25")),
        ("mixed", None),
        ("mixed-sub", d("0.50")),
    ]


def test_session_tree_places_every_session(loaded: Path) -> None:
    assert col(
        loaded,
        "session_tree",
        "root_session_id",
        "session_id",
        "parent_session_id",
        "depth",
        "path",
        "cost_usd",
    ) == [
        ("sA", "sA", None, 0, "sA", d("1")),
        ("sA", "sA1", "sA", 1, "sA > sA1", d("2")),
        ("sA", "sA3", "sA1", 2, "sA > sA1 > sA3", d("0.5")),
        ("sA", "sA2", "sA", 1, "sA > sA2", d("3")),
        ("sB", "sB", None, 0, "sB", d("4")),
    ]


def test_unit_costs_per_call_request_and_active_user(loaded: Path) -> None:
    assert rows(loaded, "unit_costs") == [
        (M, 7, 6, 3, d("15.5"), d("2.214285714"), d("2.583333333"), d("5.166666667"))
    ]


def test_feature_user_month(loaded: Path) -> None:
    assert col(
        loaded,
        "feature_user_month",
        "team",
        "feature",
        "active_users",
        "cost_usd",
        "cost_per_active_user_usd",
    ) == [
        ("search", "sem", 2, d("6"), d("3")),
        (None, None, 1, d("5"), d("5")),
        ("support", "chat", 1, d("4.5"), d("4.5")),
        ("shared", None, 1, None, None),
    ]


def test_unit_economics_bands_against_loaded_revenue(loaded: Path) -> None:
    assert col(
        loaded,
        "unit_economics",
        "level",
        "month",
        "key",
        "revenue_usd",
        "ai_cost_usd",
        "gross_margin",
        "ai_cost_ratio",
        "band",
    ) == [
        ("total", M, None, d("100"), d("15.5"), 0.845, 0.155, "good"),
        ("plan", M, "free", d("5"), d("5"), 0.0, 1.0, "concerning"),
        ("plan", M, "pro", d("20"), d("4.5"), 0.775, 0.225, "acceptable"),
        ("user", M, "u1", d("10"), d("5.5"), 0.45, 0.55, "concerning"),
    ]


def test_cache_hit_rate_by_feature_and_day(loaded: Path) -> None:
    assert col(
        loaded,
        "cache_hit_rate",
        "team",
        "feature",
        "day",
        "input_tokens",
        "cache_read_tokens",
        "hit_rate",
    ) == [
        ("search", "sem", D1.date(), 2000, 500, 0.25),
        ("search", "sem", D2.date(), 2000, 1000, 0.5),
        ("shared", None, D1.date(), 100, 0, 0.0),
        ("support", "chat", D1.date(), 4000, 3000, 0.75),
        ("support", "chat", D2.date(), 1000, 0, 0.0),
        (None, None, D1.date(), 1000, 0, 0.0),
    ]


def test_retry_overhead_counts_retries_and_failures_once(loaded: Path) -> None:
    assert col(
        loaded,
        "retry_overhead",
        "team",
        "retries",
        "failed",
        "retry_cost_usd",
        "failed_cost_usd",
        "overhead_cost_usd",
        "overhead_share",
    )[0] == ("search", 1, 1, d("3"), d("2"), d("5"), 0.8333)


def test_shared_cost_allocation_by_direct_cost(loaded: Path) -> None:
    got = col(
        loaded,
        "shared_cost_allocation",
        "team",
        "direct_cost_usd",
        "allocated_cost_usd",
        "total_cost_usd",
    )
    assert got == [
        ("search", d("6"), d("2.857142857"), d("8.857142857")),
        ("support", d("4.5"), d("2.142857143"), d("6.642857143")),
    ]
    assert sum(r[2] for r in got) == d("5")  # the untagged 5.00; the unpriced shared call adds 0


def test_focus_export_has_focus_columns_and_the_total(loaded: Path) -> None:
    names, data = run_named(loaded, "focus_export", {})
    for column in (
        "BilledCost",
        "EffectiveCost",
        "ListCost",
        "BillingCurrency",
        "BillingPeriodStart",
        "ChargePeriodStart",
        "ChargePeriodEnd",
        "ChargeCategory",
        "ConsumedQuantity",
        "ConsumedUnit",
        "ProviderName",
        "ServiceName",
        "ServiceCategory",
        "ResourceId",
        "Tags",
    ):
        assert column in names
    assert len(data) == 6
    billed = [r[names.index("BilledCost")] for r in data]
    assert sum(b for b in billed if b is not None) == d("15.5")


def test_unpriced_models(loaded: Path) -> None:
    assert col(loaded, "unpriced_models", "provider", "model", "calls", "input_tokens") == [
        ("self-hosted", "ft", 1, 100)
    ]


def test_cost_reconciliation(loaded: Path) -> None:
    assert rows(loaded, "cost_reconciliation") == [
        ("anthropic", "claude-sonnet-4-5", 2, d("9"), d("8.5"), d("0.5"), 5.8824)
    ]


def test_filters_narrow_the_facts_before_the_query(loaded: Path) -> None:
    assert col(
        loaded, "cost_by_team", "team", "calls", "cost_usd", team="search", since="2026-03-03"
    ) == [("search", 1, d("3"))]
    assert col(loaded, "cost_by_day", "day", "cost_usd", until="2026-03-03") == [
        (D1.date(), d("12"))
    ]


def test_filter_values_are_bound_not_pasted_into_sql(loaded: Path) -> None:
    assert rows(loaded, "cost_by_team", team="search' OR '1'='1") == []
    assert run_sql(loaded, "SELECT count(*) FROM usage_facts WHERE team = ?", ["x' OR 1=1 --"])[
        1
    ] == [(0,)]


def test_every_named_query_is_a_view_with_its_description(loaded: Path) -> None:
    names = {
        r[0]: r[1]
        for r in run_sql(
            loaded, "SELECT view_name, comment FROM duckdb_views() WHERE NOT internal"
        )[1]
    }
    for q in QUERIES:
        assert names.get(q.name) == q.description
        # The view and the unfiltered query agree.
        assert run_sql(loaded, f"SELECT count(*) FROM {q.name}")[1] == [
            (len(rows(loaded, q.name)),)
        ]


def test_time_filters_with_offsets_mean_the_same_instant_in_utc(loaded: Path) -> None:
    # 17:00+05:00 is 12:00 UTC, when the D1 calls happened: they are in.
    assert col(loaded, "cost_by_day", "day", "calls", since="2026-03-02T17:00:00+05:00") == [
        (D1.date(), 5),
        (D2.date(), 2),
    ]
    # 04:00+05:00 on 03-03 is 23:00 UTC on 03-02: only D2 remains.
    assert col(loaded, "cost_by_day", "day", "calls", since="2026-03-03T04:00:00+05:00") == [
        (D2.date(), 2)
    ]
    assert col(loaded, "cost_by_day", "day", "calls", until="2026-03-02T12:00:00.000001Z") == [
        (D1.date(), 5)
    ]


# A second data set for the edges the one above does not reach: two months, a priced call of
# team 'shared', a call exactly at a UTC midnight, and AI cost ratios exactly on the bands'
# boundaries. (ts, cost, team, user, plan)
FEB = datetime(2026, 2, 10, 9, tzinfo=UTC)
MIDNIGHT = datetime(2026, 3, 3, tzinfo=UTC)
EDGE_FACTS = (
    (FEB, "3.00", "search", "u1", "a"),
    (FEB, "1.00", "support", "u2", "b"),
    (FEB, "2.00", "shared", "u1", "a"),
    (D1, "1.00", "search", "u1", "a"),
    (D1, "3.00", "support", "u2", "b"),
    (D1, "4.00", "shared", "u3", None),
    (D1, "2.00", None, "u3", "b"),
    (MIDNIGHT, "1.00", "support", "u1", "a"),
)
# February has plan and user rows but no total: its total is the sum of the plans.
EDGE_REVENUE = (
    ("2026-02", "a", "", "100"),
    ("2026-02", "b", "", "1"),
    ("2026-02", "", "u1", "7"),
    ("2026-03", "", "", "50"),
    ("2026-03", "a", "", "10"),
    ("2026-03", "b", "", "10"),
)


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("edges") / "work"
    facts = [
        fact(ts, cost, team=team, feature="f", user_id=user, tags={"plan": plan} if plan else {})
        for ts, cost, team, user, plan in EDGE_FACTS
    ]
    with Warehouse(workdir) as wh:
        wh.ensure_views()
        wh.commit(facts=facts)
        csv = workdir / "revenue.csv"
        csv.write_text(
            "month,plan,user_id,revenue_usd\n" + "".join(f"{','.join(r)}\n" for r in EDGE_REVENUE)
        )
        load_revenue(wh, csv)
    return workdir


def _month(ts: datetime) -> date:
    return ts.date().replace(day=1)


def test_until_excludes_and_since_includes_a_call_at_that_instant(edges: Path) -> None:
    def per_day(lo: datetime, hi: datetime) -> list[tuple[date, int]]:
        n: dict[date, int] = {}
        for ts, *_ in EDGE_FACTS:
            if lo <= ts < hi:
                n[ts.date()] = n.get(ts.date(), 0) + 1
        return sorted(n.items())

    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)
    assert col(edges, "cost_by_day", "day", "calls", since="2026-03-01", until="2026-03-03") == (
        per_day(start, MIDNIGHT)
    )
    assert col(edges, "cost_by_day", "day", "calls", since="2026-03-03") == per_day(MIDNIGHT, end)


def test_shared_cost_is_spread_per_month_over_that_months_direct_cost(edges: Path) -> None:
    direct: dict[tuple[date, str], Decimal] = {}
    shared: dict[date, Decimal] = {}
    for ts, cost, team, *_ in EDGE_FACTS:
        if team is None or team == "shared":
            shared[_month(ts)] = shared.get(_month(ts), Decimal(0)) + Decimal(cost)
        else:
            key = (_month(ts), team)
            direct[key] = direct.get(key, Decimal(0)) + Decimal(cost)
    expected = []
    for (month, team), own in direct.items():
        month_direct = sum(v for (m, _), v in direct.items() if m == month)
        allocated = (shared[month] * own / month_direct).quantize(Decimal("1e-9"))
        expected.append((month, team, own, allocated, own + allocated))
    expected.sort(key=lambda r: (r[0], -r[4], r[1]))
    got = col(
        edges,
        "shared_cost_allocation",
        "month",
        "team",
        "direct_cost_usd",
        "allocated_cost_usd",
        "total_cost_usd",
    )
    assert got == expected


def test_unit_economics_bands_include_their_lower_bounds_and_a_total_from_plans(
    edges: Path,
) -> None:
    def band(ratio: Decimal) -> str:  # docs/warehouse.md: <20% good, 20-50% acceptable, >50%
        return (
            "good"
            if ratio < Decimal("0.2")
            else "acceptable"
            if ratio <= Decimal("0.5")
            else "concerning"
        )

    cost: dict[tuple[date, str | None], Decimal] = {}
    for ts, c, _team, _user, plan in EDGE_FACTS:
        for key in {None, plan}:
            cost[(_month(ts), key)] = cost.get((_month(ts), key), Decimal(0)) + Decimal(c)
    revenue: dict[tuple[date, str | None], Decimal] = {}
    for month, plan, user, usd in EDGE_REVENUE:
        m = date.fromisoformat(month + "-01")
        if not user:
            revenue[(m, plan or None)] = Decimal(usd)
    for month in {m for m, _ in revenue}:  # no total row: the plans' sum
        if (month, None) not in revenue:
            revenue[(month, None)] = sum(v for (m, k), v in revenue.items() if m == month)
    got = {
        (month, key): (rev, ai, b)
        for level, month, key, rev, ai, b in col(
            edges, "unit_economics", "level", "month", "key", "revenue_usd", "ai_cost_usd", "band"
        )
        if level != "user"
    }
    assert got == {k: (r, cost[k], band(cost[k] / r)) for k, r in revenue.items()}
    assert {b for _, _, b in got.values()} == {"good", "acceptable", "concerning"}
    assert got[(M, "a")][2] == got[(M, "b")][2] == "acceptable"  # exactly 20% and 50%


def test_focus_charge_period_is_the_utc_day_and_billing_period_its_month(edges: Path) -> None:
    names, data = run_named(edges, "focus_export", {})
    at = {c: names.index(c) for c in names}
    assert {r[at["ChargePeriodStart"]].date() for r in data} == {ts.date() for ts, *_ in EDGE_FACTS}
    for r in data:
        start = r[at["ChargePeriodStart"]]
        assert r[at["ChargePeriodEnd"]] == start + timedelta(days=1)
        assert r[at["BillingPeriodStart"]] == start.replace(day=1)
        assert r[at["BillingPeriodEnd"]] == (start.replace(day=1) + timedelta(days=32)).replace(
            day=1
        )
