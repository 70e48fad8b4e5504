from __future__ import annotations

from decimal import Decimal

from spendstream.stream.detectors.sessions import SessionDetector
from tests.stream.detection_facts import at, config, fact


def _feed(det: SessionDetector, facts: list) -> list:  # type: ignore[type-arg]
    out = []
    for f in facts:
        out.extend(det.observe(f, f.event.ts))
    return out


def test_101st_turn_of_a_100_turn_limit_fires_and_the_100th_does_not() -> None:
    det = SessionDetector(config(runaway={"max_session_turns": 100}))
    first100 = [fact(at(i), session_id="s", turn=i + 1, cost="0") for i in range(100)]
    assert _feed(det, first100) == []
    alerts = _feed(det, [fact(at(100), session_id="s", turn=101, cost="0")])
    assert [(a.kind, a.scope, a.value, a.threshold, a.details["limit"]) for a in alerts] == [
        ("runaway_session", "session:s", 101, 100, "turns")
    ]
    assert alerts[0].ts == at(100)
    assert _feed(det, [fact(at(101), session_id="s", cost="0")]) == []


def test_turns_count_calls_when_events_carry_no_turn_number() -> None:
    det = SessionDetector(config(runaway={"max_session_turns": 3}))
    alerts = _feed(det, [fact(at(i), session_id="s", cost="0") for i in range(4)])
    assert len(alerts) == 1 and alerts[0].value == 4


def test_session_cost_over_limit_fires_at_the_crossing_call_only() -> None:
    det = SessionDetector(config(runaway={"max_session_cost_usd": "1.00"}))
    assert (
        _feed(det, [fact(at(0), "0.60", session_id="s"), fact(at(1), "0.40", session_id="s")]) == []
    )
    alerts = _feed(det, [fact(at(2), "0.000000001", session_id="s")])
    assert [(a.details["limit"], a.value) for a in alerts] == [("cost", Decimal("1.000000001"))]


def test_session_longer_than_its_duration_limit_fires() -> None:
    det = SessionDetector(config(runaway={"max_session_minutes": 30}))
    assert _feed(det, [fact(at(0), session_id="s"), fact(at(minutes=30), session_id="s")]) == []
    alerts = _feed(det, [fact(at(minutes=30, seconds=1), session_id="s")])
    assert [a.details["limit"] for a in alerts] == ["duration"]


def test_unpriced_calls_count_turns_but_no_cost() -> None:
    det = SessionDetector(config(runaway={"max_session_turns": 2, "max_session_cost_usd": 0}))
    alerts = _feed(det, [fact(at(i), None, session_id="s") for i in range(3)])
    assert [a.details["limit"] for a in alerts] == ["turns"]


def test_idle_session_is_forgotten_and_state_restores() -> None:
    cfg = config(detection={"session_idle_s": 3600})
    det = SessionDetector(cfg)
    _feed(det, [fact(at(0), session_id="old"), fact(at(minutes=5), session_id="live")])
    det2 = SessionDetector.restore(cfg, det.snapshot())
    assert set(det2.sessions) == {"old", "live"}
    _feed(det2, [fact(at(hours=2), session_id="live")])
    assert set(det2.sessions) == {"live"}
