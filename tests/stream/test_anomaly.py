"""hourly_anomaly through the engine: the contract's plain rule, its boundaries, and the seasonal variant."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from spendstream.records import Fact
from tests.stream.detection_facts import Feed, at, both_paths, config, fact

# Every test here runs on the columnar path and on the fact-by-fact fallback.
pytestmark = pytest.mark.usefixtures(both_paths.__name__)

ANOMALY = "hourly_anomaly"
US = timedelta(microseconds=1)


def _history(hours: int, per_hour: str, start: int = 0, **tags: str) -> list[Fact]:
    """One call per hour costing ``per_hour``, hours [start, start + hours)."""
    return [fact(at(hours=h, minutes=30), per_hour, **tags) for h in range(start, start + hours)]


def _plain(**anomaly: object) -> Feed:
    return Feed(config(anomaly={"scopes": ["global"], **anomaly}), ANOMALY)


def test_hour_over_3x_the_previous_24h_mean_fires_at_the_crossing_event_once() -> None:
    feed = _plain()
    # Hours -1..23, so the first event is 24 h before hour 24; hours 0..23 average $1.
    assert feed(_history(25, "1.00", start=-1)) == []
    # Hour 24: $3.00 is not over 3 x $1; the call that takes it past fires.
    assert feed([fact(at(hours=24), "2.00"), fact(at(hours=24, minutes=1), "1.00")]) == []
    alerts = feed([fact(at(hours=24, minutes=2), "0.01")])
    assert [(a.kind, a.scope, a.value, a.threshold) for a in alerts] == [
        ("hourly_anomaly", "global", Decimal("3.01"), Decimal("3"))
    ]
    assert alerts[0].ts == at(hours=24, minutes=2)
    assert alerts[0].message == (
        "global spent $3.01 so far in the hour from 2026-03-03 00:00 UTC, over 3.0 x the "
        "previous 24 h mean hourly spend ($1.00)"
    )
    assert alerts[0].details == {
        "window_start": "2026-03-03T00:00:00+00:00",
        "baseline_mean_usd": "1.000000",
        "method": "plain",
    }
    assert feed([fact(at(hours=24, minutes=3), "5.00")]) == []


def test_the_crossing_call_inside_one_batch_is_found_exactly() -> None:
    feed = _plain()
    calls = _history(25, "1.00", start=-1)
    calls += [fact(at(hours=24, minutes=m), "0.75") for m in range(10)]  # 3.00 after four
    alerts = feed(calls)
    assert [(a.ts, a.value) for a in alerts] == [(at(hours=24, minutes=4), Decimal("3.75"))]


def test_a_late_call_in_the_batch_raises_the_baseline_of_the_hours_after_it() -> None:
    feed = _plain()
    feed(_history(25, "1.00", start=-1))  # hours 0..23: $1 each, mean $1
    # Hour 24 at $2, then a call 50 minutes late for hour 23 that lifts the previous 24 h
    # to $48 (mean $2: the threshold goes from $3 to $6), then hour 24 reaches $3.50.
    calls = [
        fact(at(hours=24, minutes=10), "2.00"),
        fact(at(hours=23, minutes=30), "24.00"),
        fact(at(hours=24, minutes=20), "1.50"),
    ]
    assert feed(calls) == []
    alerts = feed([fact(at(hours=24, minutes=30), "2.51")])  # $6.01: over 3 x $2
    assert [(a.value, a.threshold) for a in alerts] == [(Decimal("6.01"), Decimal("6"))]


def test_a_scope_is_judged_once_its_first_event_is_exactly_24_hours_before_the_hour() -> None:
    spike = [fact(at(hours=24, minutes=5), "10.00")]
    on_time = _plain()
    on_time([fact(at(hours=0), "1.00"), *_history(23, "1.00", start=1)])
    assert len(on_time(spike)) == 1
    short = _plain()
    short([fact(at(hours=0) + US, "1.00"), *_history(23, "1.00", start=1)])
    assert short(spike) == []


def test_no_anomaly_while_the_previous_24h_spent_less_than_min_baseline() -> None:
    feed = _plain(min_baseline_usd=1.0)
    feed([fact(at(hours=0), "0.50"), fact(at(hours=12), "0.49")])
    assert feed([fact(at(hours=24, minutes=1), "50.00")]) == []
    exactly = _plain(min_baseline_usd=1.0)
    exactly([fact(at(hours=0), "0.50"), fact(at(hours=12), "0.50")])
    assert len(exactly([fact(at(hours=24, minutes=1), "50.00")])) == 1


def test_spend_exactly_factor_times_the_mean_does_not_fire() -> None:
    feed = _plain(min_baseline_usd=0)
    feed([fact(at(hours=0), "12.00"), fact(at(hours=12), "12.00")])  # mean $1/h
    assert feed([fact(at(hours=24, minutes=1), "3.00")]) == []
    assert len(feed([fact(at(hours=24, minutes=2), "0.000000000000000001")])) == 1


def test_unpriced_and_free_facts_never_fire() -> None:
    feed = _plain()
    feed(_history(25, "1.00", start=-1))
    assert feed([fact(at(hours=24, minutes=i), None) for i in range(50)]) == []
    # With factor 0 any spend is over the bar, yet a free call does not fire; a priced one does.
    free = _plain(factor=0)
    free(_history(25, "1.00", start=-1))
    assert free([fact(at(hours=24, minutes=1), "0")]) == []
    assert len(free([fact(at(hours=24, minutes=2), "0.01")])) == 1


def test_each_configured_scope_kind_is_judged_on_its_own() -> None:
    feed = Feed(config(anomaly={"scopes": ["global", "team"]}), ANOMALY)
    feed(_history(25, "1.00", start=-1, team="a") + _history(25, "100.00", start=-1, team="b"))
    alerts = feed([fact(at(hours=24, minutes=5), "5.00", team="a")])
    assert [a.scope for a in alerts] == ["team:a"]


def test_alerts_of_one_call_follow_the_configured_scope_order() -> None:
    feed = Feed(config(anomaly={"scopes": ["team", "global"]}), ANOMALY)
    feed(_history(25, "1.00", start=-1, team="a"))
    alerts = feed([fact(at(hours=24, minutes=5), "5.00", team="a")])
    assert [a.scope for a in alerts] == ["team:a", "global"]


def test_late_event_counts_toward_its_own_hour_without_a_duplicate_alert() -> None:
    feed = _plain()
    feed(_history(25, "1.00", start=-1))
    feed([fact(at(hours=24, minutes=10), "2.00"), fact(at(hours=25, minutes=1), "0.10")])
    # A late call for hour 24 lands there and makes it cross, timed at its own event time.
    late = feed([fact(at(hours=24, minutes=20), "1.50")])
    assert [(a.details["window_start"], a.ts) for a in late] == [
        (at(hours=24).isoformat(), at(hours=24, minutes=20))
    ]
    assert feed([fact(at(hours=24, minutes=21), "1.00")]) == []


def test_a_scope_silent_past_its_retention_warms_up_again() -> None:
    # No lateness: hour 0 is kept while its end (01:00) + 24 h is not behind the watermark.
    cfg = config(
        anomaly={"scopes": ["team"], "min_baseline_usd": 0},
        detection={"allowed_lateness_s": 0},
    )
    kept = Feed(cfg, ANOMALY)
    kept([fact(at(minutes=30), "1.00", team="a")])
    assert len(kept([fact(at(hours=25), "1.00", team="a")])) == 1  # baseline 0: any spend
    forgotten = Feed(cfg, ANOMALY)
    forgotten([fact(at(minutes=30), "1.00", team="a")])
    assert forgotten([fact(at(hours=25) + US, "1.00", team="a")]) == []


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
    plain(diurnal())
    assert len(plain(peak)) == 1
    seasonal = _plain(method="seasonal", seasonal_days=7)
    assert seasonal(diurnal()) == []
    assert seasonal(peak) == []
    alerts = seasonal([fact(at(hours=7 * 24 + 9, minutes=31), "25.00")])
    assert len(alerts) == 1 and alerts[0].details["method"] == "seasonal"
    assert "the same hour's mean over the previous 7 days ($10.00)" in alerts[0].message


def test_a_one_day_seasonal_basis_reads_as_the_previous_day() -> None:
    # "over the previous 1 days" before.
    one = _plain(method="seasonal", seasonal_days=1)
    one([fact(at(minutes=30), "0.01"), fact(at(hours=9, minutes=30), "2.00")])
    [alert] = one([fact(at(hours=33, minutes=30), "25.00")])
    assert alert.message.endswith("over 3.0 x the same hour the previous day ($2.00)")


def test_anomaly_state_restores() -> None:
    feed = Feed(config(anomaly={"scopes": ["global", "team"]}), ANOMALY)
    feed(_history(25, "1.00", start=-1, team="a"))
    again = feed.restarted()
    assert [a.scope for a in again([fact(at(hours=24, minutes=5), "3.50", team="z")])] == ["global"]


def test_an_hour_already_over_when_its_scope_becomes_judged_fires_at_its_next_paid_call() -> None:
    # Hour 24 spends $10 before the scope is judged (its first event is 1:30). A call 24 h
    # late moves the first event to 0:00: the hour is now judged and over its bar, and the
    # first call that costs something fires, not the free one before it.
    feed = Feed(
        config(
            anomaly={"scopes": ["global"], "min_baseline_usd": 0},
            detection={"allowed_lateness_s": 90_000},
        ),
        ANOMALY,
    )
    assert feed([*_history(23, "1.00", start=1), fact(at(hours=24, minutes=1), "10.00")]) == []
    alerts = feed(
        [
            fact(at(hours=0), "0"),
            fact(at(hours=24, minutes=40), "0"),
            fact(at(hours=24, minutes=41), "0.01"),
        ]
    )
    assert [(a.ts, a.value) for a in alerts] == [(at(hours=24, minutes=41), Decimal("10.01"))]


def test_a_late_call_before_a_scopes_first_event_moves_its_warm_up_back() -> None:
    cfg = config(
        anomaly={"scopes": ["global"], "min_baseline_usd": 0},
        detection={"allowed_lateness_s": 86_400},
    )
    # The warm-up counts from the scope's earliest event, whenever it arrives.
    feed = Feed(cfg, ANOMALY)
    feed(_history(23, "1.00", start=1))  # first event 1:30: hour 24 not judged yet
    assert feed([fact(at(hours=0), "0")]) == []  # late: now 0:00, exactly 24 h before
    assert len(feed([fact(at(hours=24, minutes=5), "10.00")])) == 1


def test_a_scope_kind_listed_twice_counts_its_spend_once() -> None:
    # Hours are kept per scope, not per listing: judged twice, each call would count twice.
    twice = Feed(config(anomaly={"scopes": ["global", "global"]}), ANOMALY)
    assert twice(_history(25, "1.00", start=-1)) == []
    assert twice([fact(at(hours=24), "2.00"), fact(at(hours=24, minutes=1), "1.00")]) == []
    alerts = twice([fact(at(hours=24, minutes=2), "0.01")])
    assert [(a.scope, a.value, a.threshold) for a in alerts] == [
        ("global", Decimal("3.01"), Decimal("3"))
    ]


def test_a_late_call_does_not_pull_a_scopes_newest_hour_back() -> None:
    # Hour 24 is the scope's newest; a late call for hour 23 must leave it so. At 48:10:30
    # hour 23 is past its retention (its end + 10 min grace + 24 h) but hour 24 is not: the
    # scope is still known, its baseline is hour 24's $1, and the call is over 3 x $1/24.
    cfg = config(
        anomaly={"scopes": ["global"], "min_baseline_usd": 0},
        detection={"allowed_lateness_s": 600},
    )
    feed = Feed(cfg, ANOMALY)
    feed([fact(at(minutes=30), "1.00"), fact(at(hours=24, minutes=5), "1.00")])
    feed([fact(at(hours=23, minutes=58), "0.01")])  # late, within the 10 min grace
    alerts = feed([fact(at(hours=48, minutes=10, seconds=30), "1.00")])
    assert [a.details["window_start"] for a in alerts] == [at(hours=48).isoformat()]


def test_a_scopes_first_event_is_its_earliest_call_not_its_first_to_arrive() -> None:
    feed = _plain(min_baseline_usd=0)
    # 00:40 arrives before 00:00 (in one batch, one hour): the scope's first event is 00:00,
    # exactly 24 h before hour 24, which is therefore judged.
    feed([fact(at(minutes=40), "1.00"), fact(at(0), "1.00"), *_history(23, "1.00", start=1)])
    assert len(feed([fact(at(hours=24, minutes=5), "10.00")])) == 1
