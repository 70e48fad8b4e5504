from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from spendstream.alerts.noise import Decision, decide, is_stale, over_rate
from spendstream.config import RouteConfig

from .factories import T0, make_alert

ROUTE = RouteConfig(name="r", sinks=["s"], quiet_hours="22:00-07:00", quiet_min_severity="critical")
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)


def _decide(alert_severity: str = "critical", now: datetime = NOON, **kw: object) -> Decision:
    args: dict[str, object] = {
        "incident_open": False,
        "recent_sends": [],
        "max_per_scope": 3,
        "rate_window_s": 3600,
        "breaker": None,
    }
    args.update(kw)
    return decide(ROUTE, make_alert(severity=alert_severity), now, **args)  # type: ignore[arg-type]


def test_a_fresh_alert_is_sent() -> None:
    assert _decide() is Decision.SEND


def test_a_repeat_of_an_open_condition_is_folded_not_sent() -> None:
    assert _decide(incident_open=True) is Decision.FOLDED


def test_quiet_hours_hold_back_below_the_quiet_minimum_only() -> None:
    assert _decide("warning", NIGHT) is Decision.QUIET
    assert _decide("critical", NIGHT) is Decision.SEND
    assert _decide("warning", NOON) is Decision.SEND


def test_the_rate_limit_counts_sends_inside_the_window_only() -> None:
    recent = [NOON - timedelta(minutes=m) for m in (1, 2, 3)]
    assert _decide(recent_sends=recent) is Decision.RATE_LIMITED
    old = [NOON - timedelta(hours=2)] * 5
    assert _decide(recent_sends=old + recent[:2]) is Decision.SEND


def test_an_alert_older_than_its_scopes_closed_breaker_is_stale() -> None:
    a = make_alert()
    assert is_stale(a, ("closed", T0 + timedelta(minutes=5)))
    assert not is_stale(a, ("open", T0 + timedelta(minutes=5)))
    assert not is_stale(a, ("closed", T0 - timedelta(minutes=5)))
    assert _decide(breaker=("closed", T0 + timedelta(hours=1))) is Decision.STALE


@given(
    offsets=st.lists(st.integers(min_value=0, max_value=7200), max_size=30),
    limit=st.integers(min_value=1, max_value=10),
)
def test_over_rate_agrees_with_counting_by_hand(offsets: list[int], limit: int) -> None:
    sends = [NOON - timedelta(seconds=s) for s in offsets]
    inside = sum(1 for s in offsets if s < 3600)
    assert over_rate(sends, NOON, limit, 3600) is (inside >= limit)


def test_a_send_exactly_one_window_ago_is_outside_the_window() -> None:
    assert not over_rate([NOON - timedelta(seconds=3600)] * 3, NOON, 3, 3600)
    assert over_rate([NOON - timedelta(seconds=3599)] * 3, NOON, 3, 3600)


def test_a_breaker_closed_at_the_alerts_own_instant_does_not_make_it_stale() -> None:
    a = make_alert()
    assert not is_stale(a, ("closed", a.ts))
    assert is_stale(a, ("closed", a.ts + timedelta(microseconds=1)))


def test_a_stale_alert_is_stale_even_while_its_incident_is_open() -> None:
    # Not folded into the incident: the condition it reports is over.
    assert _decide(incident_open=True, breaker=("closed", T0 + timedelta(hours=1))) is (
        Decision.STALE
    )


def test_an_open_incident_folds_an_alert_even_in_quiet_hours() -> None:
    # Folded (counted in the open incident), not held back as quiet.
    assert _decide("warning", NIGHT, incident_open=True) is Decision.FOLDED


def test_quiet_hours_hold_back_an_alert_before_the_rate_limit_counts_it() -> None:
    recent = [NIGHT - timedelta(minutes=m) for m in (1, 2, 3)]
    assert _decide("warning", NIGHT, recent_sends=recent) is Decision.QUIET
