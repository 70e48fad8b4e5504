"""Budgets through the engine: levels reached, the hard limit reached, calendar periods."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from spendstream.records import alert_from_wire, alert_to_wire
from spendstream.stream.detectors.base import make_alert
from spendstream.table_schemas import alerts_table
from tests.stream.detection_facts import Feed, at, both_paths, config, fact

# Every test here runs on the columnar path and on the fact-by-fact fallback.
pytestmark = pytest.mark.usefixtures(both_paths.__name__)

BUDGET = ("budget_threshold", "budget_exceeded")


def _feed(**budget: object) -> Feed:
    b = {"scope": "team:search", "period": "day", "amount_usd": 100, **budget}
    return Feed(config(budget=[b]), *BUDGET)


def test_each_level_alerts_once_when_the_period_spend_reaches_it() -> None:
    feed = _feed()
    assert feed([fact(at(0), "49.99", team="search")]) == []
    a50 = feed([fact(at(1), "0.01", team="search")])  # reaches 50.00 exactly
    assert [(a.kind, a.scope, a.value, a.threshold, a.severity) for a in a50] == [
        ("budget_threshold", "team:search", Decimal("50.00"), Decimal("50.0"), "info")
    ]
    assert a50[0].message == (
        "team:search spent $50.00 of its $100.00 day budget (50% level) in the period "
        "from 2026-03-02 00:00 UTC"
    )
    assert a50[0].details == {
        "budget": "team:search/day/100",
        "period": "day",
        "period_start": "2026-03-02T00:00:00+00:00",
        "period_end": "2026-03-03T00:00:00+00:00",
        "amount_usd": "100",
        "level": "0.5",
    }
    assert feed([fact(at(2), "1", team="search")]) == []
    # One call can cross two levels: both alert, at that call, lowest first.
    both = feed([fact(at(3), "60", team="search")])
    assert [(a.details["level"], a.severity) for a in both] == [
        ("0.8", "warning"),
        ("1.0", "critical"),
    ]
    assert feed([fact(at(4), "1", team="search")]) == []


def test_a_level_written_twice_alerts_once_under_its_first_spelling() -> None:
    # `1` and `1.0` were two levels (each is named by its text): two alerts at one crossing.
    feed = _feed(alert_at=[1, Decimal("1.0"), Decimal("0.5"), Decimal("0.50")])
    alerts = feed([fact(at(0), "120", team="search")])
    assert [(a.kind, a.details["level"]) for a in alerts] == [
        ("budget_threshold", "0.5"),
        ("budget_threshold", "1"),
    ]


@pytest.mark.parametrize(
    ("amount", "written"),
    [("40.0", "$40.00"), ("12.5", "$12.50"), ("0.005", "$0.005"), ("1E+3", "$1,000.00")],
)
def test_the_budget_in_an_alert_reads_as_money_beside_the_spend(amount: str, written: str) -> None:
    # The configured amount keeps every digit it has (a sub-cent budget is not rounded
    # away) and shows at least cents, as the spend beside it does.
    feed = _feed(amount_usd=Decimal(amount), alert_at=[1.0])
    [alert] = feed([fact(at(0), amount, team="search")])
    assert f"of its {written} day budget (100% level)" in alert.message
    assert alert.details["amount_usd"] == amount  # the configured value, as configured


@pytest.mark.parametrize(
    ("amount", "cost", "spent"),
    [
        ("0.01", "0.00255", "$0.00255"),  # "spent $0.00 of its $0.01" before
        ("10000", "5000.005", "$5,000.00"),  # half-even at the cent
        ("10000", "6543.215", "$6,543.22"),
    ],
)
def test_the_spend_in_an_alert_reads_as_money(amount: str, cost: str, spent: str) -> None:
    # A first budget is often tiny, to see an alert fire: its sub-cent spend read $0.00.
    feed = _feed(amount_usd=Decimal(amount), alert_at=[0.1])
    [alert] = feed([fact(at(0), cost, team="search")])
    assert alert.message.startswith(f"team:search spent {spent} of its $")
    assert alert.value == Decimal(cost)


def test_a_level_crossed_inside_one_batch_is_the_exact_call() -> None:
    feed = _feed(alert_at=[0.5])
    alerts = feed([fact(at(i), "12.5", team="search") for i in range(6)])  # 50 at the 4th
    assert [(a.ts, a.value) for a in alerts] == [(at(3), Decimal("50.0"))]


def test_other_scopes_and_unpriced_facts_do_not_count() -> None:
    feed = _feed()
    assert feed([fact(at(0), "500", team="other"), fact(at(1), None, team="search")]) == []


def test_hard_limit_fires_budget_exceeded_once_when_reached_and_new_period_starts_over() -> None:
    feed = _feed(hard_limit=2.0, alert_at=[])
    assert feed([fact(at(0), "199.99", team="search")]) == []
    ex = feed([fact(at(1), "0.01", team="search"), fact(at(2), "5", team="search")])
    assert [(a.kind, a.value, a.threshold, a.severity) for a in ex] == [
        ("budget_exceeded", Decimal("200.00"), Decimal("200.0"), "critical")
    ]
    assert ex[0].details["period_end"] == "2026-03-03T00:00:00+00:00"
    assert ex[0].message == (
        "team:search spent $200.00, past the hard limit of 2.0 x its $100.00 day budget"
    )
    nxt = feed([fact(at(hours=24), "250", team="search")])
    assert [a.kind for a in nxt] == ["budget_exceeded"]
    assert nxt[0].dedup_key != ex[0].dedup_key


def test_a_spend_just_past_a_limit_is_not_written_as_the_limit() -> None:
    # $0.0125 past a $0.01 budget read "spent $0.01, past the hard limit of 1.0 x its
    # $0.01 day budget": cents that do not read past the threshold give way to every digit.
    feed = _feed(amount_usd="0.01", hard_limit=1.0, alert_at=[0.5])
    alerts = feed([fact(at(0), "0.0125", team="search")])
    assert [a.message for a in alerts] == [
        "team:search spent $0.0125 of its $0.01 day budget (50% level) in the period "
        "from 2026-03-02 00:00 UTC",
        "team:search spent $0.0125, past the hard limit of 1.0 x its $0.01 day budget",
    ]


def test_hard_limit_opens_the_breaker_until_the_period_ends() -> None:
    feed = _feed(hard_limit=1.0, alert_at=[])
    feed([fact(at(0), "100", team="search")])
    assert [(e.scope, e.state) for e in feed.events] == [("team:search", "open")]
    feed([fact(at(hours=24) - timedelta(microseconds=1), "0", team="other")])
    assert len(feed.events) == 1
    feed([fact(at(hours=24), "0", team="other")])
    assert [(e.state, e.ts, e.reason) for e in feed.events[1:]] == [
        ("closed", at(hours=24), "budget_exceeded: budget period ended")
    ]


def test_global_budget_counts_everything() -> None:
    feed = Feed(
        config(budget=[{"scope": "global", "period": "hour", "amount_usd": 1, "alert_at": [1]}]),
        *BUDGET,
    )
    assert len(feed([fact(at(0), "0.5", team="a"), fact(at(1), "0.5")])) == 1


def test_late_event_counts_toward_its_own_period_within_lateness() -> None:
    feed = _feed(period="hour", amount_usd=10, alert_at=[1])
    feed([fact(at(minutes=59), "9", team="search"), fact(at(minutes=70), "1", team="search")])
    late = feed([fact(at(minutes=59, seconds=30), "1", team="search")])
    assert [(a.details["period_start"], a.ts) for a in late] == [
        ("2026-03-02T00:00:00+00:00", at(minutes=59, seconds=30))
    ]


def test_a_period_takes_facts_until_its_end_plus_the_lateness() -> None:
    cfg = config(
        budget=[{"scope": "global", "period": "hour", "amount_usd": 1, "alert_at": [1]}],
        detection={"allowed_lateness_s": 600},
    )
    for wm, fires in ((at(minutes=70), True), (at(minutes=70) + timedelta(microseconds=1), False)):
        feed = Feed(cfg, *BUDGET)
        feed([fact(at(0), "0.5"), fact(wm, "0")])
        assert bool(feed([fact(at(minutes=30), "0.5")])) is fires


def test_calendar_periods_are_utc_months_days_and_hours() -> None:
    start = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    for period, (begin, end) in {
        "month": ("2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        "day": ("2026-12-31T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
        "hour": ("2026-12-31T23:00:00+00:00", "2027-01-01T00:00:00+00:00"),
    }.items():
        feed = Feed(
            config(
                budget=[{"scope": "global", "period": period, "amount_usd": 1, "alert_at": [1]}]
            ),
            *BUDGET,
        )
        (a,) = feed([fact(start, "1")])
        assert (a.details["period_start"], a.details["period_end"]) == (begin, end)
    feb = Feed(
        config(budget=[{"scope": "global", "period": "month", "amount_usd": 2, "alert_at": [1]}]),
        *BUDGET,
    )
    # A leap year's February ends on the 29th; March is a new period.
    feb([fact(datetime(2028, 2, 29, 23, 59, tzinfo=UTC), "1")])
    assert feb([fact(datetime(2028, 3, 1, tzinfo=UTC), "1")]) == []


def test_two_budgets_on_one_scope_keep_their_own_spend() -> None:
    feed = Feed(
        config(
            budget=[
                {"scope": "team:a", "period": "day", "amount_usd": 10, "alert_at": [1]},
                {"scope": "team:a", "period": "hour", "amount_usd": 4, "alert_at": [1]},
            ]
        ),
        *BUDGET,
    )
    alerts = feed([fact(at(minutes=m), "2", team="a") for m in range(4)])  # day: 8 of 10
    assert [(a.details["period"], a.ts) for a in alerts] == [("hour", at(minutes=1))]


def test_budget_state_restores() -> None:
    cfg = config(budget=[{"scope": "global", "period": "month", "amount_usd": 10, "alert_at": [1]}])
    feed = Feed(cfg, *BUDGET)
    feed([fact(at(0), "9")])
    assert len(feed.restarted()([fact(at(1), "1")])) == 1


def test_a_call_too_late_for_its_period_is_not_counted_where_a_crossing_is_found() -> None:
    # Hour 0 takes calls while the watermark is within 10 min of its end: the last call
    # (at 00:30, watermark 01:11) is not taken and must not reach the 100% level.
    feed = Feed(
        config(
            budget=[{"scope": "global", "period": "hour", "amount_usd": 1, "alert_at": [0.5, 1]}],
            detection={"allowed_lateness_s": 600},
        ),
        *BUDGET,
    )
    alerts = feed([fact(at(0), "0.60"), fact(at(minutes=71), "0"), fact(at(minutes=30), "0.60")])
    assert [(a.details["level"], a.ts) for a in alerts] == [("0.5", at(0))]


def test_a_state_restores_into_a_configuration_with_a_budget_removed() -> None:
    # A deploy that drops a [[budget]] entry restores the others' spend and ignores its own.
    day = {"scope": "global", "period": "day", "amount_usd": 10, "alert_at": [1]}
    hour = {"scope": "global", "period": "hour", "amount_usd": 10, "alert_at": [1]}
    feed = Feed(config(budget=[day, hour]), *BUDGET)
    feed([fact(at(0), "9")])
    fewer = Feed(config(budget=[day]), *BUDGET, state=feed.engine.snapshot())
    assert [a.details["period"] for a in fewer([fact(at(1), "1")])] == ["day"]


def test_one_call_reaching_levels_and_the_hard_limit_alerts_the_levels_then_the_limit() -> None:
    # The order of one fact's budget alerts: its levels, lowest first, then the hard limit
    # (what a router pages first, and the breaker's reason, follow it).
    feed = _feed(alert_at=[1.0, 0.5], hard_limit=1.0)
    alerts = feed([fact(at(0), "99", team="search"), fact(at(1), "1", team="search")])
    assert [(a.kind, a.details.get("level"), a.ts) for a in alerts] == [
        ("budget_threshold", "0.5", at(0)),
        ("budget_threshold", "1.0", at(1)),
        ("budget_exceeded", None, at(1)),
    ]


def test_a_restored_state_keeps_what_fired_in_its_periods() -> None:
    # A restart between any two batches changes nothing: a level or hard limit that fired
    # before the snapshot does not fire again after it, even once the engine's recently
    # emitted dedup_keys (two days) no longer hold it (oracle: one engine fed throughout).
    cfg = config(
        budget=[
            {"scope": "global", "period": "month", "amount_usd": 10, "alert_at": [0.5, 1]},
            {"scope": "team:a", "period": "hour", "amount_usd": 2, "alert_at": [], "hard_limit": 1},
        ]
    )
    batches = [
        [fact(at(0), "6", team="a")],
        [fact(at(1), "4")],
        [fact(at(2), "1", team="a")],
        [fact(at(minutes=70), "3", team="a")],
        [fact(at(hours=24 * 5), "1")],  # the engine has long forgotten the month's alerts
    ]
    one, restarted = Feed(cfg, *BUDGET), Feed(cfg, *BUDGET)
    want, got = [], []
    for batch in batches:
        want += one(batch)
        got += restarted(batch)
        restarted = restarted.restarted()
    assert got == want
    assert len(want) == 4  # 0.5, team a's limit, 1.0, then team a's limit in the next hour


def test_a_period_spend_past_ten_billion_is_summed_to_the_last_of_its_18_places() -> None:
    # Python's default decimal context keeps 28 digits: from $1e10 a spend with 18 places
    # has more, and the fact-by-fact path rounded the alert's value (and the running spend).
    cost = Decimal("999999999.123456789012345678")
    feed = _feed(amount_usd=Decimal("20000000000.000000000000000002"), alert_at=[0.5])
    [alert] = feed([fact(at(i), cost, team="search") for i in range(11)])
    assert alert.ts == at(10)
    assert alert.value == Decimal("10999999990.358024679135802458")  # 11 x cost
    assert alert.threshold == Decimal("10000000000.000000000000000001")


def test_a_bar_with_more_than_18_places_is_rounded_half_even_in_its_alert() -> None:
    # Half of $20000000000.000000000000000001 has 19 places; exact in the money context, and
    # past $1e10 rounding it to 18 needs more than 28 digits: writing the alert raised
    # InvalidOperation (at every restart). The threshold is the bar rounded half-even; the
    # crossing is judged on the exact bar.
    cost = Decimal("999999999.123456789012345678")
    feed = _feed(amount_usd=Decimal("20000000000.000000000000000001"), alert_at=[0.5])
    [alert] = feed([fact(at(i), cost, team="search") for i in range(11)])
    assert alert.threshold == Decimal("10000000000.000000000000000000")  # ...0005: tie, even
    assert alert.value == Decimal("10999999990.358024679135802458")
    assert alerts_table([alert]).column("threshold").to_pylist() == [alert.threshold]
    assert "threshold_usd" not in alert.details
    odd = make_alert("budget_threshold", "global", "info", at(0),
                     Decimal("12345678901.0000000000000000005"),
                     Decimal("12345678901.0000000000000000015"), "m", ())  # fmt: skip
    assert (odd.value, odd.threshold) == (
        Decimal("12345678901.000000000000000000"),  # half-even: ties to the even last digit
        Decimal("12345678901.000000000000000002"),
    )
    assert alerts_table([odd]).column("value").to_pylist() == [odd.value]


def test_an_alert_amount_the_money_type_cannot_hold_is_held_at_its_largest() -> None:
    # A bar is refused at configuration past 1e20 (tests/test_config.py), and no call costs
    # 1e9: a sum past 1e20 takes 1e11 calls. Should one still arise, the alert must remain
    # writable (alerts table, alerts topic) and keep the exact amount in its details.
    largest = Decimal("99999999999999999999.999999999999999999")
    alert = make_alert(
        "runaway_session", "session:s", "critical", at(0), Decimal("2E+20"), Decimal("1E+20"),
        "m", ("s",), {"session": "s"},
    )  # fmt: skip
    assert (alert.value, alert.threshold) == (largest, largest)
    assert alert.details == {"session": "s", "value_usd": "2E+20", "threshold_usd": "1E+20"}
    assert alert_from_wire(orjson.loads(orjson.dumps(alert_to_wire(alert)))) == alert
    table = alerts_table([alert])
    assert table.column("value").to_pylist() == [largest]
    kept = make_alert(
        "runaway_session", "session:s", "critical", at(0), largest, Decimal(1), "m", ()
    )
    assert (kept.value, kept.details) == (largest, {})


def test_make_alert_leaves_the_details_it_was_given_as_they_were() -> None:
    # A detector may hand the same details to more than one alert: the exact amount one of
    # them could not hold must not appear in the other's.
    shared = {"session": "s"}
    big = make_alert("runaway_session", "session:s", "critical", at(0), Decimal("2E+20"),
                     Decimal(1), "m", ("s",), shared)  # fmt: skip
    small = make_alert("runaway_session", "session:t", "critical", at(0), Decimal(3),
                       Decimal(1), "m", ("t",), shared)  # fmt: skip
    assert shared == {"session": "s"}
    assert big.details == {"session": "s", "value_usd": "2E+20"}
    assert small.details == {"session": "s"}


def test_a_budget_added_ahead_of_another_starts_at_zero_and_takes_none_of_its_spend() -> None:
    # The snapshot named budgets by their [[budget]] index: a team's budget written above an
    # existing one took that one's spend (team:u, having spent $3, 'spent $10.00' and its
    # breaker opened) and the existing one started again from zero.
    t = {"scope": "team:t", "period": "day", "amount_usd": 10, "alert_at": [1], "hard_limit": 1}
    u = {"scope": "team:u", "period": "day", "amount_usd": 10, "alert_at": [1], "hard_limit": 1}
    feed = Feed(config(budget=[t]), *BUDGET)
    assert feed([fact(at(0), "9", team="t")]) == []
    more = Feed(config(budget=[u, t]), *BUDGET, state=feed.engine.snapshot())
    assert more([fact(at(1), "3", team="u")]) == []
    alerts = more([fact(at(2), "1", team="t")])
    assert [(a.kind, a.scope) for a in alerts] == [
        ("budget_threshold", "team:t"),
        ("budget_exceeded", "team:t"),
    ]
    # And the first removed: team:t keeps its spend and what fired.
    fewer = Feed(config(budget=[t]), *BUDGET, state=more.engine.snapshot())
    assert fewer([fact(at(3), "1", team="t")]) == []


def test_a_state_written_with_budget_indexes_still_restores_by_index() -> None:
    # Snapshots from before budgets were named by scope and period.
    from spendstream.stream.detectors.budgets import BudgetDetector

    cfg = config(budget=[{"scope": "global", "period": "month", "amount_usd": 10}])
    detector = BudgetDetector(cfg)
    start = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
    detector.restore([[0, start, "9.5", ["0.5", "0.8"]]])
    assert detector.snapshot() == [["global/month#0/10", start, "9.5", ["0.5", "0.8"]]]
    # And one that named a budget by its scope and period alone.
    again = BudgetDetector(cfg)
    again.restore([["global/month#0", start, "9.5", ["0.5"]]])
    assert again.snapshot() == [["global/month#0/10", start, "9.5", ["0.5"]]]


def test_a_saved_budget_entry_past_the_configured_list_restores_to_a_free_one() -> None:
    # Two team:a/day budgets were saved; the deploy keeps one, at another amount. The saved
    # entry #1 names no configured entry: it takes the free one, not an IndexError at start.
    from spendstream.stream.detectors.budgets import BudgetDetector

    cfg = config(budget=[{"scope": "team:a", "period": "day", "amount_usd": 300}])
    detector = BudgetDetector(cfg)
    start = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp() * 1_000_000)
    detector.restore([["team:a/day#1/200", start, "5", ["0.5"]]])
    assert detector.snapshot() == [["team:a/day#0/300", start, "5", ["0.5"]]]


def test_two_budgets_of_one_scope_and_period_keep_what_fired_when_moved() -> None:
    # Named by scope, period and entry alone, the two swapped what fired: the $100 budget
    # took the $10 one's fired levels and hard limit, and never alerted nor opened its
    # breaker at $110.
    small = {"scope": "team:a", "period": "day", "amount_usd": 10, "alert_at": [1], "hard_limit": 1}
    big = {**small, "amount_usd": 100}
    feed = Feed(config(budget=[small, big]), *BUDGET)
    assert [a.details["budget"] for a in feed([fact(at(0), "20", team="a")])] == [
        "team:a/day/10",
        "team:a/day/10",
    ]
    moved = Feed(config(budget=[big, small]), *BUDGET, state=feed.engine.snapshot())
    alerts = moved([fact(at(1), "90", team="a")])
    assert [(a.kind, a.details["budget"]) for a in alerts] == [
        ("budget_threshold", "team:a/day/100"),
        ("budget_exceeded", "team:a/day/100"),
    ]
    # One removed: the other keeps its own state, not the removed one's.
    fewer = Feed(config(budget=[big]), *BUDGET, state=feed.engine.snapshot())
    assert [a.kind for a in fewer([fact(at(1), "90", team="a")])] == [
        "budget_threshold",
        "budget_exceeded",
    ]
    # An amount changed on one of them: it keeps its state by scope and period.
    raised = Feed(
        config(budget=[{**small, "amount_usd": 15}, big]), *BUDGET, state=feed.engine.snapshot()
    )
    assert [a.details["budget"] for a in raised([fact(at(1), "90", team="a")])] == [
        "team:a/day/100",
        "team:a/day/100",
    ]


def test_a_day_and_an_hour_budget_of_one_scope_each_count_their_own_period() -> None:
    # At midnight the hour and the day start together: the two budgets' partials share the
    # scope and the window start, and differ in its end. Each budget takes its own period's
    # alone (matching on the start alone gave the day budget the hour's spend too: $12 of a
    # $10 day from $6 of calls; it survived a mutation pass).
    day = {"scope": "global", "period": "day", "amount_usd": 10, "alert_at": [1]}
    hour = {"scope": "global", "period": "hour", "amount_usd": 10, "alert_at": [1]}
    feed = Feed(config(budget=[day, hour]), *BUDGET)
    assert feed([fact(at(0), "6")]) == []
    alerts = feed([fact(at(minutes=90), "4")])  # the day reaches $10, the next hour $4
    assert [(a.details["period"], a.value, a.ts) for a in alerts] == [
        ("day", Decimal(10), at(minutes=90))
    ]


def test_a_level_added_below_the_periods_spend_fires_at_its_next_priced_call() -> None:
    # A deploy adds a level the period has already passed: reaching it is judged at the next
    # fact that counts (a priced one), not at an unpriced call before it, on either path.
    before = {"scope": "global", "period": "day", "amount_usd": 10, "alert_at": [1]}
    feed = Feed(config(budget=[before]), *BUDGET)
    assert feed([fact(at(0), "6")]) == []
    after = {**before, "alert_at": [Decimal("0.5"), 1]}
    redeployed = Feed(config(budget=[after]), *BUDGET, state=feed.engine.snapshot())
    alerts = redeployed([fact(at(1), None), fact(at(2), "0.01")])
    assert [(a.details["level"], a.value, a.ts) for a in alerts] == [
        ("0.5", Decimal("6.01"), at(2))
    ]
