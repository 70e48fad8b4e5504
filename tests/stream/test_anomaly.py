from __future__ import annotations

from decimal import Decimal

from spendstream.records import Fact
from spendstream.stream.detectors.anomaly import AnomalyDetector
from tests.stream.detection_facts import at, config, fact, run


def _history(hours: int, per_hour: str, start: int = 0, **tags: str) -> list[Fact]:
    """One call per hour costing ``per_hour``, hours [start, start + hours)."""
    return [fact(at(hours=h, minutes=30), per_hour, **tags) for h in range(start, start + hours)]


def _plain(**anomaly: object) -> AnomalyDetector:
    return AnomalyDetector(config(anomaly={"scopes": ["global"], **anomaly}))


def test_hour_over_3x_the_previous_24h_mean_fires_at_the_crossing_event_once() -> None:
    det = _plain()
    # Hours -1..23, so the first event is 24 h before hour 24; hours 0..23 average $1.
    assert run(det, _history(25, "1.00", start=-1)) == []
    # Hour 24: $3.00 is not over 3 x $1; the call that takes it past fires.
    assert run(det, [fact(at(hours=24), "2.00"), fact(at(hours=24, minutes=1), "1.00")]) == []
    alerts = run(det, [fact(at(hours=24, minutes=2), "0.01")])
    assert [(a.kind, a.scope, a.value, a.threshold) for a in alerts] == [
        ("hourly_anomaly", "global", Decimal("3.01"), Decimal("3"))
    ]
    assert alerts[0].ts == at(hours=24, minutes=2)
    assert run(det, [fact(at(hours=24, minutes=3), "5.00")]) == []


def test_no_scope_is_judged_before_24_hours_of_history() -> None:
    det = _plain()
    # First event at 00:30: the hour starting 24:00 is judged only if 00:30 <= 00:00. It is not.
    run(det, _history(24, "1.00"))
    assert det.scopes["global"].first_ts > int(at(hours=0).timestamp())
    det2 = _plain()
    run(det2, [fact(at(hours=0), "1.00"), *_history(23, "1.00", start=1)])
    assert len(run(det2, [fact(at(hours=24, minutes=5), "10.00")])) == 1
    det3 = _plain()
    run(det3, [fact(at(hours=0, seconds=1), "1.00"), *_history(23, "1.00", start=1)])
    assert run(det3, [fact(at(hours=24, minutes=5), "100.00")]) == []


def test_no_anomaly_while_the_previous_24h_spent_less_than_min_baseline() -> None:
    det = _plain(min_baseline_usd=1.0)
    run(det, [fact(at(hours=0), "0.50"), fact(at(hours=12), "0.49")])
    assert run(det, [fact(at(hours=24, minutes=1), "50.00")]) == []
    det2 = _plain(min_baseline_usd=1.0)
    run(det2, [fact(at(hours=0), "0.50"), fact(at(hours=12), "0.50")])
    assert len(run(det2, [fact(at(hours=24, minutes=1), "50.00")])) == 1


def test_empty_hours_count_as_zero_in_the_mean() -> None:
    det = _plain(min_baseline_usd=0)
    run(det, [fact(at(hours=0), "12.00"), fact(at(hours=12), "12.00")])  # mean $1/h
    assert run(det, [fact(at(hours=24, minutes=1), "3.00")]) == []
    assert len(run(det, [fact(at(hours=24, minutes=2), "0.01")])) == 1


def test_unpriced_facts_count_zero_spend() -> None:
    det = _plain()
    run(det, _history(25, "1.00", start=-1))
    assert run(det, [fact(at(hours=24, minutes=i), None) for i in range(50)]) == []


def test_each_configured_scope_kind_is_judged_on_its_own() -> None:
    det = AnomalyDetector(config(anomaly={"scopes": ["global", "team"]}))
    run(det, _history(25, "1.00", start=-1, team="a") + _history(25, "100.00", start=-1, team="b"))
    alerts = run(det, [fact(at(hours=24, minutes=5), "5.00", team="a")])
    assert [a.scope for a in alerts] == ["team:a"]


def test_late_event_counts_toward_its_own_hour_without_a_duplicate_alert() -> None:
    det = _plain()
    run(det, _history(25, "1.00", start=-1))
    run(det, [fact(at(hours=24, minutes=10), "2.00"), fact(at(hours=25, minutes=1), "0.10")])
    # A late call for hour 24 lands there and makes it cross, timed at its own event time.
    late = run(det, [fact(at(hours=24, minutes=20), "1.50")])
    assert [(a.details["window_start"], a.ts) for a in late] == [
        (at(hours=24).isoformat(), at(hours=24, minutes=20))
    ]
    assert run(det, [fact(at(hours=24, minutes=21), "1.00")]) == []


def test_seasonal_variant_accepts_a_daily_peak_the_plain_rule_flags() -> None:
    def diurnal() -> list[Fact]:
        # Seven days: $10 at 09:00, $0.50 in every other hour.
        return [
            fact(at(hours=d * 24 + h, minutes=30), "10.00" if h == 9 else "0.50")
            for d in range(7)
            for h in range(24)
        ]

    peak = [fact(at(hours=7 * 24 + 9, minutes=30), "10.00")]
    plain = _plain()
    run(plain, diurnal())
    assert len(run(plain, peak)) == 1
    seasonal = _plain(method="seasonal", seasonal_days=7)
    alerts = run(seasonal, diurnal())
    assert alerts == []
    assert run(seasonal, peak) == []
    assert len(run(seasonal, [fact(at(hours=7 * 24 + 9, minutes=31), "25.00")])) == 1


def test_anomaly_state_restores_and_old_scopes_expire() -> None:
    cfg = config(anomaly={"scopes": ["global", "team"]})
    det = AnomalyDetector(cfg)
    run(det, _history(25, "1.00", start=-1, team="a"))
    det2 = AnomalyDetector.restore(cfg, det.snapshot())
    assert len(run(det2, [fact(at(hours=24, minutes=5), "3.50", team="z")])) == 1  # global
    run(det2, [fact(at(hours=80), "1.00", team="z")])
    assert "team:a" not in det2.scopes
