from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from spendstream.stream.detectors.budgets import BudgetDetector, period_bounds
from tests.stream.detection_facts import at, config, fact, run


def _det(**budget: object) -> BudgetDetector:
    b = {"scope": "team:search", "period": "day", "amount_usd": 100, **budget}
    return BudgetDetector(config(budget=[b]))


def test_each_level_alerts_once_when_the_period_spend_reaches_it() -> None:
    det = _det()
    assert run(det, [fact(at(0), "49.99", team="search")]) == []
    a50 = run(det, [fact(at(1), "0.01", team="search")])
    assert [(a.kind, a.scope, a.value, a.threshold, a.severity) for a in a50] == [
        ("budget_threshold", "team:search", Decimal("50.00"), Decimal("50.0"), "info")
    ]
    assert run(det, [fact(at(2), "1", team="search")]) == []
    # One call can cross two levels: both alert, at that call.
    both = run(det, [fact(at(3), "60", team="search")])
    assert [(a.details["level"], a.severity) for a in both] == [
        ("0.8", "warning"),
        ("1.0", "critical"),
    ]
    assert run(det, [fact(at(4), "1", team="search")]) == []


def test_other_scopes_and_unpriced_facts_do_not_count() -> None:
    det = _det()
    assert run(det, [fact(at(0), "500", team="other"), fact(at(1), None, team="search")]) == []


def test_hard_limit_fires_budget_exceeded_once_and_new_period_starts_over() -> None:
    det = _det(hard_limit=2.0, alert_at=[])
    assert run(det, [fact(at(0), "199.99", team="search")]) == []
    ex = run(det, [fact(at(1), "0.01", team="search"), fact(at(2), "5", team="search")])
    assert [(a.kind, a.value, a.threshold, a.severity) for a in ex] == [
        ("budget_exceeded", Decimal("200.00"), Decimal("200.0"), "critical")
    ]
    assert ex[0].details["period_end"] == "2026-03-03T00:00:00+00:00"
    nxt = run(det, [fact(at(hours=24), "250", team="search")])
    assert [a.kind for a in nxt] == ["budget_exceeded"]
    assert nxt[0].dedup_key != ex[0].dedup_key


def test_global_budget_counts_everything() -> None:
    det = BudgetDetector(
        config(budget=[{"scope": "global", "period": "hour", "amount_usd": 1, "alert_at": [1]}])
    )
    assert len(run(det, [fact(at(0), "0.5", team="a"), fact(at(1), "0.5")])) == 1


def test_late_event_counts_toward_its_own_period_within_lateness() -> None:
    det = _det(period="hour", amount_usd=10, alert_at=[1])
    run(det, [fact(at(minutes=59), "9", team="search"), fact(at(minutes=70), "1", team="search")])
    late = run(det, [fact(at(minutes=59, seconds=30), "1", team="search")])
    assert [(a.details["period_start"], a.ts) for a in late] == [
        ("2026-03-02T00:00:00+00:00", at(minutes=59, seconds=30))
    ]


def test_calendar_periods_are_utc_months_days_and_hours() -> None:
    ts = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert period_bounds(ts, "month") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_bounds(ts, "day")[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_bounds(ts, "hour")[0] == datetime(2026, 12, 31, 23, tzinfo=UTC)


def test_budget_state_restores() -> None:
    cfg = config(budget=[{"scope": "global", "period": "month", "amount_usd": 10, "alert_at": [1]}])
    det = BudgetDetector(cfg)
    run(det, [fact(at(0), "9")])
    det2 = BudgetDetector.restore(cfg, det.snapshot())
    assert len(run(det2, [fact(at(1), "1")])) == 1
