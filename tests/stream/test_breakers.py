from __future__ import annotations

from datetime import timedelta

from spendstream.config import BreakerConfig
from spendstream.records import Alert
from spendstream.stream.breakers import BreakerBoard
from spendstream.stream.detectors.base import make_alert
from tests.stream.detection_facts import at


def _alert(kind: str, scope: str, seconds: float = 0, **details: str) -> Alert:
    return make_alert(kind, scope, "critical", at(seconds), 1, 1, "m", (str(seconds),), details)  # type: ignore[arg-type]


def test_rate_breaker_opens_goes_half_open_after_cooldown_then_closes() -> None:
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=300))
    ev = board.on_alert(_alert("runaway_rate", "api_key:k"))
    assert ev is not None and (ev.scope, ev.state, ev.ts) == ("api_key:k", "open", at(0))
    assert board.tick(at(299)) == []
    half = board.tick(at(300))
    assert [(e.scope, e.state, e.ts) for e in half] == [("api_key:k", "half_open", at(300))]
    assert half[0].reason == "runaway_rate: cool-down of 300 s elapsed"
    # Half-open for one minute exactly (60 s of event time), then closed.
    assert board.tick(at(359)) == []
    closed = board.tick(at(360))
    assert [(e.state, e.reason) for e in closed] == [("closed", "runaway_rate: did not trip again")]
    assert board.status() == {}


def test_half_open_breaker_that_trips_again_reopens() -> None:
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=120))
    board.on_alert(_alert("runaway_rate", "session:s"))
    assert [e.state for e in board.tick(at(120))] == ["half_open"]
    ev = board.on_alert(_alert("runaway_rate", "session:s", 130))
    assert ev is not None and ev.state == "open"
    # The cool-down starts again from the new trip, and the half-open minute is void.
    assert board.tick(at(190)) == []
    assert board.tick(at(249)) == []
    assert [e.state for e in board.tick(at(250))] == ["half_open"]


def test_session_breaker_stays_open_until_reset() -> None:
    board = BreakerBoard(BreakerConfig())
    board.on_alert(_alert("runaway_session", "session:s"))
    assert board.tick(at(6 * 86400)) == []
    assert board.status()["session:s"].state == "open"
    ev = board.reset("session:s", at(6 * 86400))
    assert ev is not None and (ev.state, ev.reason) == ("closed", "manual reset")
    assert board.reset("session:s", at(6 * 86400)) is None


def test_budget_breaker_closes_when_the_period_ends() -> None:
    board = BreakerBoard(BreakerConfig())
    end = at(3600).isoformat()
    board.on_alert(_alert("budget_exceeded", "team:t", period_end=end))
    assert board.tick(at(3599)) == []
    assert [e.state for e in board.tick(at(3600))] == ["closed"]


def test_kinds_not_in_open_on_change_nothing_and_open_is_not_repeated() -> None:
    board = BreakerBoard(BreakerConfig())
    assert board.on_alert(_alert("retry_storm", "api_key:k")) is None
    board2 = BreakerBoard(BreakerConfig(open_on=["retry_storm"]))
    assert board2.on_alert(_alert("retry_storm", "api_key:k")) is not None
    assert board2.on_alert(_alert("retry_storm", "api_key:k", 5)) is None


def test_board_restores_with_its_due_times() -> None:
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=30))
    board.on_alert(_alert("runaway_rate", "api_key:k"))
    board2 = BreakerBoard.restore(BreakerConfig(rate_cooldown_s=30), board.snapshot())
    assert [e.state for e in board2.tick(at(0) + timedelta(seconds=30))] == ["half_open"]


def test_stay_open_breaker_is_retired_after_its_retention() -> None:
    board = BreakerBoard(BreakerConfig(stay_open_retention_s=7 * 86400))
    board.on_alert(_alert("runaway_session", "session:s"))
    assert board.tick(at(7 * 86400 - 1)) == []
    ev = board.tick(at(7 * 86400))
    assert [(e.state, e.reason) for e in ev] == [
        ("closed", "runaway_session: retired after 7 days open")
    ]


def test_longer_rule_takes_over_an_open_breaker() -> None:
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=60))
    board.on_alert(_alert("runaway_rate", "session:s"))
    assert board.on_alert(_alert("runaway_session", "session:s", 10)) is None
    assert board.tick(at(3600)) == []  # no half-open: it is a session breaker now
    assert board.status()["session:s"].reason.startswith("runaway_session")
