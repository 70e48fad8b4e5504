"""runaway_rate through the engine: the limit+1-th call in a UTC minute fires, once."""

from __future__ import annotations

import pytest

from tests.stream.detection_facts import Feed, at, both_paths, config, fact

# Every test here runs on the columnar path and on the fact-by-fact fallback.
pytestmark = pytest.mark.usefixtures(both_paths.__name__)

RATE = "runaway_rate"


def test_call_over_the_per_minute_limit_of_a_key_fires_once_per_minute() -> None:
    feed = Feed(config(runaway={"max_calls_per_minute": 5}), RATE)
    assert feed([fact(at(i), api_key_id="k1") for i in range(5)]) == []
    over = feed([fact(at(6), api_key_id="k1"), fact(at(7), api_key_id="k1")])
    assert [(a.kind, a.scope, a.value, a.threshold) for a in over] == [
        ("runaway_rate", "api_key:k1", 6, 5)
    ]
    assert over[0].ts == at(6)
    assert over[0].severity == "critical"
    assert over[0].message == (
        "api_key:k1 made more than 5 calls in the minute from 2026-03-02 00:00 UTC"
    )
    assert over[0].details == {"window_start": "2026-03-02T00:00:00+00:00", "window_s": "60"}
    # A new minute is a new window: it fires again there, once.
    again = feed([fact(at(60 + i), api_key_id="k1") for i in range(8)])
    assert len(again) == 1 and again[0].dedup_key != over[0].dedup_key
    assert again[0].ts == at(65)


def test_a_limit_of_one_call_reads_in_the_singular() -> None:
    feed = Feed(config(runaway={"max_calls_per_minute": 1}), RATE)
    over = feed([fact(at(i), api_key_id="k1") for i in range(2)])
    assert [a.message for a in over] == [
        "api_key:k1 made more than 1 call in the minute from 2026-03-02 00:00 UTC"
    ]


def test_the_limit_plus_first_call_fires_inside_one_batch_too() -> None:
    feed = Feed(config(runaway={"max_calls_per_minute": 3}), RATE)
    alerts = feed([fact(at(i), api_key_id="k") for i in range(10)])
    assert [(a.ts, a.value) for a in alerts] == [(at(3), 4)]


def test_session_rate_is_judged_apart_from_its_key() -> None:
    feed = Feed(config(runaway={"max_calls_per_minute": 3}), RATE)
    alerts = feed([fact(at(i), api_key_id=f"k{i}", session_id="s1") for i in range(4)])
    assert [a.scope for a in alerts] == ["session:s1"]


def test_a_call_over_both_limits_alerts_for_its_key_before_its_session() -> None:
    feed = Feed(config(runaway={"max_calls_per_minute": 2}), RATE)
    alerts = feed([fact(at(i), api_key_id="k", session_id="s") for i in range(3)])
    assert [a.scope for a in alerts] == ["api_key:k", "session:s"]


def test_calls_spread_over_two_minutes_do_not_fire() -> None:
    feed = Feed(config(runaway={"max_calls_per_minute": 3}), RATE)
    alerts = feed([fact(at(50 + i * 3), api_key_id="k") for i in range(6)])  # 50..65 s: 4 + 2
    assert len(alerts) == 1  # 50,53,56,59 are four calls in minute 0
    assert feed([fact(at(121 + i * 20), api_key_id="k2") for i in range(6)]) == []


def test_late_call_counts_in_its_own_minute_and_too_late_ones_are_ignored() -> None:
    cfg = config(runaway={"max_calls_per_minute": 2}, detection={"allowed_lateness_s": 120})
    feed = Feed(cfg, RATE)
    feed([fact(at(0), api_key_id="k"), fact(at(1), api_key_id="k")])
    # Watermark moves 100 s ahead; a late call for minute 0 still lands there and crosses.
    late = feed([fact(at(100), api_key_id="x"), fact(at(2), api_key_id="k")])
    assert [a.scope for a in late] == ["api_key:k"] and late[0].ts == at(2)
    # Far beyond the lateness: minute 0 is gone and a late call neither fires nor re-fires.
    feed2 = Feed(cfg, RATE)
    feed2([fact(at(0), api_key_id="k"), fact(at(1), api_key_id="k"), fact(at(900), api_key_id="y")])
    assert feed2([fact(at(3), api_key_id="k")]) == []


def test_a_minute_takes_calls_until_its_end_plus_the_lateness_and_not_after() -> None:
    cfg = config(runaway={"max_calls_per_minute": 2}, detection={"allowed_lateness_s": 120})
    # Minute 0 ends at 60 s; with 120 s of grace it takes calls while the watermark <= 180 s.
    on_time = Feed(cfg, RATE)
    on_time(
        [fact(at(0), api_key_id="k"), fact(at(1), api_key_id="k"), fact(at(180), api_key_id="y")]
    )
    assert len(on_time([fact(at(2), api_key_id="k")])) == 1
    too_late = Feed(cfg, RATE)
    too_late(
        [
            fact(at(0), api_key_id="k"),
            fact(at(1), api_key_id="k"),
            fact(at(180, minutes=0) + (at(0.000001) - at(0)), api_key_id="y"),
        ]
    )
    assert too_late([fact(at(2), api_key_id="k")]) == []


def test_state_survives_snapshot_and_restore() -> None:
    feed = Feed(config(runaway={"max_calls_per_minute": 2}), RATE)
    feed([fact(at(0), api_key_id="k"), fact(at(1), api_key_id="k")])
    assert len(feed.restarted()([fact(at(2), api_key_id="k")])) == 1
