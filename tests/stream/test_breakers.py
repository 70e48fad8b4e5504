from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from spendstream.config import BreakerConfig
from spendstream.records import Alert
from spendstream.stream.breakers import BreakerBoard, BreakerStatus, BreakerWire
from spendstream.stream.detectors.base import make_alert
from spendstream.stream.windows import to_us
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


@pytest.mark.parametrize(
    ("retention_s", "said"),
    [(86400, "1 day"), (3 * 86400, "3 days"), (3600, "1 h"), (36 * 3600, "36 h"), (3601, "3601 s")],
)
def test_a_retired_breaker_says_its_retention_in_the_unit_it_was_set_in(
    retention_s: int, said: str
) -> None:
    # "retired after 0 days open" for a retention of an hour; "1 days" for one day.
    board = BreakerBoard(BreakerConfig(stay_open_retention_s=retention_s))
    board.on_alert(_alert("runaway_session", "session:s"))
    [ev] = board.tick(at(retention_s))
    assert ev.reason == f"runaway_session: retired after {said} open"


def test_longer_rule_takes_over_an_open_breaker() -> None:
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=60))
    board.on_alert(_alert("runaway_rate", "session:s"))
    assert board.on_alert(_alert("runaway_session", "session:s", 10)) is None
    assert board.tick(at(3600)) == []  # no half-open: it is a session breaker now
    assert board.status()["session:s"].reason.startswith("runaway_session")


def test_an_alert_that_keeps_an_open_breaker_just_as_long_does_not_take_it_over() -> None:
    # Only a rule that keeps the breaker open *longer* takes over; one due at the same time
    # leaves the kind (how it closes) and the reason of the alert that opened it.
    cfg = BreakerConfig(open_on=["runaway_rate", "retry_storm"], rate_cooldown_s=60)
    board = BreakerBoard(cfg)
    board.on_alert(_alert("runaway_rate", "api_key:k"))
    assert board.on_alert(_alert("retry_storm", "api_key:k")) is None
    assert board.status()["api_key:k"].reason == "runaway_rate: m"
    # One second later it is due later: then it takes over.
    board.on_alert(_alert("retry_storm", "api_key:k", 1))
    assert board.status()["api_key:k"].reason == "retry_storm: m"


def test_a_later_alert_of_the_same_kind_extends_the_cooldown_but_keeps_the_reason() -> None:
    # The reason names the alert that opened the breaker; a repeat of its kind only pushes the
    # cool-down back (a reason that changed with every repeat would hide the first trip).
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=60))
    six, five = Decimal(6), Decimal(5)
    first = make_alert(
        "runaway_rate", "api_key:k", "critical", at(0), six, five, "first", ("0",), {}
    )
    again = make_alert(
        "runaway_rate", "api_key:k", "critical", at(30), six, five, "again", ("1",), {}
    )
    board.on_alert(first)
    assert board.on_alert(again) is None
    assert board.status()["api_key:k"] == BreakerStatus("open", "runaway_rate: first", at(0))
    assert board.tick(at(89)) == []
    assert [e.state for e in board.tick(at(90))] == ["half_open"]


def test_breakers_due_at_one_watermark_move_in_scope_order() -> None:
    # Scope order, not the order they opened in: a board restored from its (sorted) snapshot
    # emits the same events in the same order as the live one.
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=60))
    for scope in ("session:z", "api_key:b", "api_key:a"):
        board.on_alert(_alert("runaway_rate", scope))
    assert [e.scope for e in board.tick(at(60))] == ["api_key:a", "api_key:b", "session:z"]


def test_a_half_open_breaker_is_half_open_since_the_watermark_that_moved_it() -> None:
    # Due at 300 s, moved by the first watermark past it (310 s): its status, like its event,
    # dates from 310 s, and its half-open minute runs from there.
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=300))
    board.on_alert(_alert("runaway_rate", "api_key:k"))
    (half,) = board.tick(at(310))
    assert board.status()["api_key:k"] == BreakerStatus("half_open", half.reason, at(310))
    assert board.tick(at(369)) == []
    assert [e.state for e in board.tick(at(370))] == ["closed"]


def test_an_unpriced_model_breaker_stays_open_until_retired() -> None:
    # unpriced_model closes like runaway_session (it does not go half-open after the
    # cool-down: a model with no price stays without one). It survived a mutation pass that
    # left it out of the stay-open kinds.
    cfg = BreakerConfig(open_on=["unpriced_model"], rate_cooldown_s=60, stay_open_retention_s=3600)
    board = BreakerBoard(cfg)
    board.on_alert(_alert("unpriced_model", "global"))
    assert board.tick(at(3599)) == []
    assert board.status()["global"].state == "open"
    assert [(e.state, e.reason) for e in board.tick(at(3600))] == [
        ("closed", "unpriced_model: retired after 1 h open")
    ]


def test_due_us_follows_an_extended_cooldown_and_a_reset() -> None:
    # The judge ticks the board at due_us: it names the next transition, not a stale one.
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=60))
    board.on_alert(_alert("runaway_rate", "api_key:k"))
    assert board.due_us == to_us(at(60))
    board.on_alert(_alert("runaway_session", "api_key:k", 10))  # stays open: retention
    assert board.due_us == to_us(at(10 + 7 * 86400))
    board.reset("api_key:k", at(20))
    assert board.due_us is None


def test_a_snapshot_lists_breakers_in_scope_order() -> None:
    # The snapshot is stored with the engine's state: the same breakers give the same one
    # whatever order they opened in.
    board = BreakerBoard(BreakerConfig())
    for scope in ("session:z", "api_key:b", "api_key:a"):
        board.on_alert(_alert("runaway_rate", scope))
    assert [w[0] for w in board.snapshot()] == ["api_key:a", "api_key:b", "session:z"]


def test_a_restored_breaker_open_for_ever_takes_a_rate_alert_without_change() -> None:
    # Snapshots from before stay-open breakers were retired hold until=None (open until a
    # reset). A rate alert on such a breaker must leave it as it was, not compare a time to
    # None and crash the engine.
    wire: list[BreakerWire] = [
        ["session:s1", "open", "runaway_session: old", to_us(at()), "runaway_session", None]
    ]
    board = BreakerBoard.restore(BreakerConfig(), wire)
    before = board.status()
    assert board.on_alert(_alert("runaway_rate", "session:s1", 10)) is None
    assert board.status() == before
    assert board.due_us is None


def test_the_board_is_due_at_its_earliest_breaker_not_its_latest() -> None:
    # Two breakers due at different times: the board is due at the sooner one, and a tick at
    # that time moves it alone (a mutation pass that took the latest due time held the first
    # breaker open until the second was due).
    board = BreakerBoard(BreakerConfig(rate_cooldown_s=60))
    board.on_alert(_alert("runaway_rate", "api_key:late", 30))
    board.on_alert(_alert("runaway_rate", "api_key:soon", 0))
    assert board.due_us == to_us(at(60))
    assert [(e.scope, e.state) for e in board.tick(at(60))] == [("api_key:soon", "half_open")]
    assert board.due_us == to_us(at(90))
    assert [(e.scope, e.state) for e in board.tick(at(90))] == [("api_key:late", "half_open")]
