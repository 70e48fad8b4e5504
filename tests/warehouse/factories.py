"""Builders of warehouse inputs: real UsageEvents and records with exact Decimal costs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from spendstream.producers.event import UsageEvent
from spendstream.records import Alert, BreakerEvent, Cost, DeadLetter, Fact

__all__ = ["T0", "alert", "breaker", "days", "dead_letter", "event", "fact"]

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
_ids = itertools.count()


def event(ts: datetime = T0, **fields: Any) -> UsageEvent:
    data: dict[str, Any] = {
        "event_id": f"ev-{next(_ids)}",
        "ts": ts,
        "provider": "openai",
        "model": "gpt-5-mini",
        "input_tokens": 1000,
        "output_tokens": 100,
    }
    data.update(fields)
    return UsageEvent.model_validate(data)


def fact(
    ts: datetime = T0,
    cost: str | None = "0.01",
    *,
    ingested_at: datetime | None = None,
    **fields: Any,
) -> Fact:
    """A fact whose whole cost is ``cost`` (input part: all of it); ``None``: unpriced."""
    c = None
    if cost is not None:
        d = Decimal(cost)
        c = Cost(d, Decimal(0), Decimal(0), Decimal(0), d, "test-catalog")
    return Fact(event=event(ts, **fields), cost=c, ingested_at=ingested_at or ts)


def alert(ts: datetime = T0, scope: str = "team:search", **fields: Any) -> Alert:
    n = next(_ids)
    data: dict[str, Any] = {
        "alert_id": f"al-{n}",
        "kind": "runaway_rate",
        "scope": scope,
        "severity": "warning",
        "ts": ts,
        "value": Decimal("150"),
        "threshold": Decimal("120"),
        "message": "150 calls/min over 120",
        "dedup_key": f"dk-{n}",
    }
    data.update(fields)
    return Alert(**data)


def breaker(ts: datetime = T0, scope: str = "api_key:k1", state: str = "open") -> BreakerEvent:
    return BreakerEvent(scope=scope, state=state, reason="runaway_rate", ts=ts)  # type: ignore[arg-type]


def dead_letter(raw: str = "{not json", at: datetime = T0, source: str = "f.jsonl") -> DeadLetter:
    return DeadLetter(raw=raw, error="invalid JSON", source=source, received_at=at)


def days(n: float) -> timedelta:
    return timedelta(days=n)
