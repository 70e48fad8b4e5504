"""Plain records that flow from the stream to the warehouse and the alert router.

These are hot-path values: frozen, slotted dataclasses, no I/O, no heavy imports.
Money is ``Decimal`` everywhere; costs are exact and carried with ``COST_SCALE``
fractional digits when stored (DECIMAL(38, 18) in the warehouse).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Literal

from spendstream.instants import in_utc
from spendstream.money import money_error
from spendstream.producers.event import EARLIEST_TS, UsageEvent

__all__ = [
    "ALERT_KINDS",
    "COST_SCALE",
    "RECORD_CLOCK_MARGIN_S",
    "Alert",
    "AlertKind",
    "BreakerEvent",
    "BreakerState",
    "Cost",
    "DeadLetter",
    "Fact",
    "Severity",
    "alert_from_wire",
    "alert_to_wire",
    "breaker_from_wire",
    "breaker_to_wire",
    "dead_letter_to_wire",
    "stable_id",
    "ts_bound_error",
]

# Fractional digits of stored money: exact for every catalog rate and discount we know of.
COST_SCALE = 18

AlertKind = Literal[
    "runaway_rate",
    "runaway_session",
    "retry_storm",
    "hourly_anomaly",
    "budget_threshold",
    "budget_exceeded",
    "unpriced_model",
    "cache_hit_drop",
]
ALERT_KINDS: tuple[str, ...] = AlertKind.__args__  # type: ignore[attr-defined]
Severity = Literal["info", "warning", "critical"]
BreakerState = Literal["open", "closed", "half_open"]


def stable_id(*parts: str) -> str:
    """A deterministic id, so both runtimes (embedded and Kafka) name the same thing alike."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


@dataclass(slots=True, frozen=True)
class Cost:
    """The price of one event, split as the warehouse's cost columns (``cost_usd`` is their sum)."""

    input_cost_usd: Decimal
    cache_read_cost_usd: Decimal
    cache_write_cost_usd: Decimal
    output_cost_usd: Decimal
    cost_usd: Decimal
    price_source: str
    # Server-side tool requests (web search, ...): a component added after the contract's four.
    tool_cost_usd: Decimal = Decimal(0)


@dataclass(slots=True, frozen=True)
class Fact:
    """A validated, deduplicated event with its price (``cost is None``: no price known)."""

    event: UsageEvent
    cost: Cost | None
    ingested_at: datetime

    @property
    def priced(self) -> bool:
        return self.cost is not None


@dataclass(slots=True, frozen=True)
class Alert:
    """A condition that held at event time ``ts`` for ``scope``.

    ``dedup_key`` names the condition (same condition, same key, in every runtime);
    ``alert_id`` names this occurrence.
    """

    alert_id: str
    kind: AlertKind
    scope: str
    severity: Severity
    ts: datetime
    value: Decimal
    threshold: Decimal
    message: str
    dedup_key: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class BreakerEvent:
    """A circuit breaker transition for one scope."""

    scope: str
    state: BreakerState
    reason: str
    ts: datetime


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """An input that could not become a fact, with a reason a person can act on."""

    raw: str
    error: str
    source: str
    received_at: datetime


# What a record read back from a topic must hold: a stray another client wrote there (an
# unknown kind, a naive ts, "lots" for a value) is refused here, as a ValueError its reader
# turns into a bad record, not an error later inside the router, at every re-read.
_SEVERITIES: tuple[str, ...] = Severity.__args__  # type: ignore[attr-defined]
_BREAKER_STATES: tuple[str, ...] = BreakerState.__args__  # type: ignore[attr-defined]


def _dec(value: object) -> Decimal:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal") from None
    problem = money_error(amount)
    if problem is not None:
        raise ValueError(problem)
    return amount


def _one_of(value: object, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _aware_ts(value: object) -> datetime:
    """An alert's or breaker event's ts read back, in UTC (one outside UTC's years is a
    ValueError, not an OverflowError)."""
    ts = datetime.fromisoformat(str(value))
    if ts.tzinfo is None:
        raise ValueError(f"ts {value!r} lacks its UTC offset")
    try:
        return in_utc(ts)
    except ValueError as exc:
        raise ValueError(f"ts {exc}") from None


# How far behind a worker's clock the clock of a process reading its records may run.
RECORD_CLOCK_MARGIN_S = 300


def ts_bound_error(ts: datetime, now: datetime, max_future_skew_s: int) -> str | None:
    """Why an alert's or breaker event's ``ts`` read off a topic at ``now`` cannot be the
    pipeline's (None: it can be). Its events were not before ``EARLIEST_TS`` nor more than
    ``max_future_skew_s`` after their receipt; ``RECORD_CLOCK_MARGIN_S`` more is allowed for
    the reader's clock running behind the worker's."""
    if ts < EARLIEST_TS:
        return f"ts {ts.isoformat()} is before {EARLIEST_TS.year}"
    ahead = (ts - now).total_seconds()
    if ahead > max_future_skew_s + RECORD_CLOCK_MARGIN_S:
        return (
            f"ts {ts.isoformat()} is {ahead:,.0f} s after it was read: more than [detection] "
            f"max_future_skew_s ({max_future_skew_s} s) and {RECORD_CLOCK_MARGIN_S} s for "
            "clocks that disagree"
        )
    return None


def alert_to_wire(alert: Alert) -> dict[str, object]:
    """The JSON form published on ``spendstream.alerts`` (money as decimal strings)."""
    return {
        "alert_id": alert.alert_id,
        "kind": alert.kind,
        "scope": alert.scope,
        "severity": alert.severity,
        "ts": alert.ts.isoformat(),
        "value": str(alert.value),
        "threshold": str(alert.threshold),
        "message": alert.message,
        "dedup_key": alert.dedup_key,
        "details": dict(alert.details),
    }


def alert_from_wire(data: dict[str, object]) -> Alert:
    details = data.get("details") or {}
    if not isinstance(details, dict):
        raise TypeError("details is not a JSON object")
    return Alert(
        alert_id=str(data["alert_id"]),
        kind=_one_of(data["kind"], ALERT_KINDS, "kind"),  # type: ignore[arg-type]
        scope=str(data["scope"]),
        severity=_one_of(data["severity"], _SEVERITIES, "severity"),  # type: ignore[arg-type]
        ts=_aware_ts(data["ts"]),
        value=_dec(data["value"]),
        threshold=_dec(data["threshold"]),
        message=str(data["message"]),
        dedup_key=str(data["dedup_key"]),
        details={str(k): str(v) for k, v in details.items()},
    )


def breaker_to_wire(event: BreakerEvent) -> dict[str, object]:
    """The JSON value published on the compacted ``spendstream.breakers`` topic (key: scope)."""
    return {
        "scope": event.scope,
        "state": event.state,
        "reason": event.reason,
        "ts": event.ts.isoformat(),
    }


def breaker_from_wire(data: dict[str, object]) -> BreakerEvent:
    return BreakerEvent(
        scope=str(data["scope"]),
        state=_one_of(data["state"], _BREAKER_STATES, "state"),  # type: ignore[arg-type]
        reason=str(data["reason"]),
        ts=_aware_ts(data["ts"]),
    )


def dead_letter_to_wire(letter: DeadLetter) -> dict[str, object]:
    """The JSON value published on ``spendstream.dead-letters`` (no key)."""
    return {
        "raw": letter.raw,
        "error": letter.error,
        "source": letter.source,
        "received_at": letter.received_at.isoformat(),
    }
