"""Alerts and breaker events as the stream produces them (via stream.records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from spendstream.records import Alert, BreakerEvent, BreakerState, stable_id

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
PD_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"  # PagerDuty routing keys are 32 characters


def make_alert(
    scope: str = "session:s1",
    kind: str = "runaway_session",
    severity: str = "critical",
    *,
    at: datetime = T0,
    n: int = 0,
    details: dict[str, str] | None = None,
    value: str = "51.25",
    threshold: str = "50",
) -> Alert:
    dedup = stable_id(kind, scope)
    return Alert(
        alert_id=stable_id(dedup, str(n)),
        kind=kind,  # type: ignore[arg-type]
        scope=scope,
        severity=severity,  # type: ignore[arg-type]
        ts=at + timedelta(seconds=n),
        value=Decimal(value),
        threshold=Decimal(threshold),
        message=f"{scope} cost ${value}, over its limit of ${threshold}",
        dedup_key=dedup,
        details=details if details is not None else {"api_key_id": "key-ci", "team": "platform"},
    )


def breaker(
    scope: str, state: BreakerState = "closed", at: datetime = T0 + timedelta(hours=1)
) -> BreakerEvent:
    return BreakerEvent(scope=scope, state=state, reason="reset by an operator", ts=at)
