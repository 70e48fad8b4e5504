"""Noise control, pure: what to send, what to fold into an open incident, what to hold back.

The router asks :class:`spendstream.alerts.state.DeliveryState` for the facts (is this
incident open, how many notifications went to this scope lately, what is the breaker's
last state) and these functions decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from spendstream.config import RouteConfig
from spendstream.records import Alert, BreakerState

from .routing import at_least, in_quiet_hours

__all__ = ["Decision", "decide", "is_stale", "over_rate"]


class Decision(StrEnum):
    SEND = "send"
    FOLDED = "folded"  # same condition (or group) already open: counted, not paged again
    QUIET = "quiet"  # quiet hours and below the route's quiet minimum severity
    RATE_LIMITED = "rate_limited"
    STALE = "stale"  # its scope's breaker closed after the alert: the condition is over
    DUPLICATE = "duplicate"  # this very alert (alert_id) was handled before


def over_rate(recent_sends: Sequence[datetime], now: datetime, limit: int, window_s: float) -> bool:
    cutoff = now - timedelta(seconds=window_s)
    return sum(1 for t in recent_sends if t > cutoff) >= limit


def is_stale(alert: Alert, breaker: tuple[BreakerState, datetime] | None) -> bool:
    """An alert read after its scope's breaker was closed (catching up on a backlog)."""
    return breaker is not None and breaker[0] == "closed" and breaker[1] > alert.ts


def decide(
    route: RouteConfig,
    alert: Alert,
    now: datetime,
    *,
    incident_open: bool,
    recent_sends: Sequence[datetime],
    max_per_scope: int,
    rate_window_s: float,
    breaker: tuple[BreakerState, datetime] | None,
) -> Decision:
    if is_stale(alert, breaker):
        return Decision.STALE
    if incident_open:
        return Decision.FOLDED
    if in_quiet_hours(route.quiet_hours, now) and not at_least(
        alert.severity, route.quiet_min_severity
    ):
        return Decision.QUIET
    if over_rate(recent_sends, now, max_per_scope, rate_window_s):
        return Decision.RATE_LIMITED
    return Decision.SEND
