"""runaway_session through the engine: turns, cost and duration limits, each once per session."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from tests.stream.detection_facts import Feed, at, both_paths, config, fact

# Every test here runs on the columnar path and on the fact-by-fact fallback.
pytestmark = pytest.mark.usefixtures(both_paths.__name__)

SESSION = "runaway_session"
US = timedelta(microseconds=1)


def test_101st_turn_of_a_100_turn_limit_fires_and_the_100th_does_not() -> None:
    feed = Feed(config(runaway={"max_session_turns": 100}), SESSION)
    assert feed([fact(at(i), session_id="s", turn=i + 1, cost="0") for i in range(100)]) == []
    alerts = feed([fact(at(100), session_id="s", turn=101, cost="0")])
    assert [(a.kind, a.scope, a.value, a.threshold, a.details["limit"]) for a in alerts] == [
        ("runaway_session", "session:s", 101, 100, "turns")
    ]
    assert alerts[0].ts == at(100)
    assert alerts[0].message == "session:s is over its turns limit: 101 turns > 100"
    assert alerts[0].details == {"limit": "turns", "session_id": "s"}
    assert feed([fact(at(101), session_id="s", cost="0")]) == []


def test_a_turn_number_past_the_limit_fires_at_once() -> None:
    feed = Feed(config(runaway={"max_session_turns": 10}), SESSION)
    alerts = feed([fact(at(0), session_id="s", turn=1), fact(at(1), session_id="s", turn=11)])
    assert [(a.ts, a.value) for a in alerts] == [(at(1), 11)]


def test_turns_count_calls_when_events_carry_no_turn_number() -> None:
    feed = Feed(config(runaway={"max_session_turns": 3}), SESSION)
    alerts = feed([fact(at(i), session_id="s", cost="0") for i in range(4)])
    assert len(alerts) == 1 and alerts[0].value == 4


def test_session_cost_over_limit_fires_at_the_crossing_call_only() -> None:
    feed = Feed(config(runaway={"max_session_cost_usd": "1.00"}), SESSION)
    # Exactly the limit does not fire ...
    assert feed([fact(at(0), "0.60", session_id="s"), fact(at(1), "0.40", session_id="s")]) == []
    # ... the smallest amount past it does.
    alerts = feed([fact(at(2), "0.000000001", session_id="s")])
    assert [(a.details["limit"], a.value) for a in alerts] == [("cost", Decimal("1.000000001"))]
    assert alerts[0].message == "session:s is over its cost limit: $1.000000001 > $1.00"


def test_cost_crossing_inside_one_batch_is_the_exact_call() -> None:
    feed = Feed(config(runaway={"max_session_cost_usd": "1.00"}), SESSION)
    calls = [fact(at(i), "0.25", session_id="s") for i in range(4)]  # reaches 1.00 exactly
    calls.append(fact(at(4), "0.000000000000000001", session_id="s"))
    calls.append(fact(at(5), "5", session_id="s"))
    alerts = feed(calls)
    assert [(a.ts, a.value) for a in alerts] == [(at(4), Decimal("1.000000000000000001"))]


def test_session_longer_than_its_duration_limit_fires() -> None:
    feed = Feed(config(runaway={"max_session_minutes": 30}), SESSION)
    assert feed([fact(at(0), session_id="s"), fact(at(minutes=30), session_id="s")]) == []
    alerts = feed([fact(at(minutes=30) + US, session_id="s")])
    assert [(a.details["limit"], a.value) for a in alerts] == [("duration", Decimal("30.000000"))]


def test_duration_counts_a_late_call_that_extends_the_session_backwards() -> None:
    feed = Feed(config(runaway={"max_session_minutes": 1}), SESSION)
    feed([fact(at(100), session_id="s")])
    alerts = feed([fact(at(39), session_id="s")])  # span 61 s
    assert [(a.details["limit"], a.value) for a in alerts] == [("duration", Decimal("1.016667"))]


def test_unpriced_calls_count_turns_but_no_cost() -> None:
    feed = Feed(config(runaway={"max_session_turns": 2, "max_session_cost_usd": 0}), SESSION)
    alerts = feed([fact(at(i), None, session_id="s") for i in range(3)])
    assert [a.details["limit"] for a in alerts] == ["turns"]


def test_two_limits_crossed_by_one_call_alert_turns_before_cost() -> None:
    cfg = config(runaway={"max_session_turns": 1, "max_session_cost_usd": "0.01"})
    feed = Feed(cfg, SESSION)
    alerts = feed([fact(at(0), "0.01", session_id="s"), fact(at(1), "0.01", session_id="s")])
    assert [a.details["limit"] for a in alerts] == ["turns", "cost"]


def test_a_session_idle_past_session_idle_s_starts_afresh_and_one_idle_exactly_does_not() -> None:
    cfg = config(
        runaway={"max_session_turns": 2, "max_session_minutes": 600},
        detection={"session_idle_s": 3600},
    )
    kept = Feed(cfg, SESSION)
    kept([fact(at(0), session_id="s"), fact(at(1), session_id="s")])
    # The next call 3600 s after the last: still the same session, its 3rd turn fires.
    assert len(kept([fact(at(3601), session_id="s")])) == 1
    fresh = Feed(cfg, SESSION)
    fresh([fact(at(0), session_id="s"), fact(at(1), session_id="s")])
    # One microsecond later it was forgotten: this is its first turn again.
    assert fresh([fact(at(3601) + US, session_id="s")]) == []
    again = fresh([fact(at(3602), session_id="s"), fact(at(3603), session_id="s")])
    assert [(a.ts, a.value) for a in again] == [(at(3603), 3)]


def test_a_forgotten_session_that_crosses_again_is_not_alerted_twice() -> None:
    cfg = config(runaway={"max_session_turns": 6}, detection={"session_idle_s": 900})
    feed = Feed(cfg, SESSION)
    assert [a.kind for a in feed([fact(at(i * 20), session_id="s") for i in range(7)])] == [SESSION]
    # The session idles out, then replayed late calls rebuild its state: no second alert.
    feed([fact(at(minutes=40), session_id="other")])
    assert feed([fact(at(minutes=31 + i / 10), session_id="s") for i in range(7)]) == []


def test_idle_session_is_forgotten_and_state_restores() -> None:
    cfg = config(
        runaway={"max_session_turns": 2, "max_session_minutes": 600},
        detection={"session_idle_s": 3600},
    )
    feed = Feed(cfg, SESSION)
    feed([fact(at(0), session_id="old"), fact(at(minutes=5), session_id="live")])
    again = feed.restarted()
    # Both carried over: one more call of each is their second, and "live" then its third.
    again([fact(at(minutes=6), session_id="old"), fact(at(minutes=7), session_id="live")])
    assert [a.scope for a in again([fact(at(minutes=8), session_id="live")])] == ["session:live"]


def test_a_late_call_that_extends_a_session_backwards_counts_in_later_batches_too() -> None:
    # The session's first call moves back to 50 s with the late call, and stays there: the
    # call at 111 s makes it 61 s long, over one minute.
    feed = Feed(config(runaway={"max_session_minutes": 1}), SESSION)
    feed([fact(at(100), session_id="s")])
    assert feed([fact(at(50), session_id="s")]) == []  # 50 s
    alerts = feed([fact(at(111), session_id="s")])
    assert [(a.details["limit"], a.value) for a in alerts] == [("duration", Decimal("1.016667"))]


def test_a_duration_reads_as_minutes_people_write() -> None:
    feed = Feed(config(runaway={"max_session_minutes": "30"}), SESSION)
    alerts = feed([fact(at(0), session_id="s"), fact(at(270 * 60), session_id="s")])
    assert [a.message for a in alerts] == ["session:s is over its duration limit: 270 minutes > 30"]


def test_a_cost_past_the_limit_by_one_atto_dollar_fires_where_floats_cannot_tell() -> None:
    # $1.00 + $1e-18 is $1.00 as a float: the columnar path's float screen must leave a
    # margin, or a session that ends its batch past the limit by less than a float's step
    # never fires (it survived a mutation pass that screened with `total > limit`).
    one_batch = Feed(config(runaway={"max_session_cost_usd": "1.00"}), SESSION)
    calls = [fact(at(i), "0.25", session_id="s") for i in range(4)]  # reaches 1.00 exactly
    calls.append(fact(at(4), "0.000000000000000001", session_id="s"))
    assert [(a.ts, a.value) for a in one_batch(calls)] == [(at(4), Decimal("1.000000000000000001"))]
    carried = Feed(config(runaway={"max_session_cost_usd": "1.00"}), SESSION)
    assert carried([fact(at(0), "1.00", session_id="s")]) == []
    alerts = carried([fact(at(1), "0.000000000000000001", session_id="s")])
    assert [(a.ts, a.value) for a in alerts] == [(at(1), Decimal("1.000000000000000001"))]
    # 0.31 + 0.62 sums to 0.9299999999999999 in the float cost column: below the limit.
    below = Feed(config(runaway={"max_session_cost_usd": "0.93"}), SESSION)
    calls = [fact(at(0), "0.31", session_id="s"), fact(at(1), "0.62", session_id="s")]
    calls.append(fact(at(2), "0.000000000000000001", session_id="s"))
    assert [(a.ts, a.value) for a in below(calls)] == [(at(2), Decimal("0.930000000000000001"))]
