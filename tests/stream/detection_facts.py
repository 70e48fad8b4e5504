"""Builders of facts for the detector tests: real UsageEvents, exact Decimal costs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from spendstream.config import Config, config_from_dict
from spendstream.producers.event import UsageEvent
from spendstream.records import Cost, Fact

__all__ = ["T0", "at", "config", "fact", "run"]

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
_ids = itertools.count()


def at(seconds: float = 0, *, minutes: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(seconds=seconds, minutes=minutes, hours=hours)


def config(**sections: Any) -> Config:
    return config_from_dict(sections)


def fact(ts: datetime, cost: str | Decimal | None = "0.01", **fields: Any) -> Fact:
    """One fact; ``cost=None`` is an unpriced model."""
    data: dict[str, Any] = {
        "event_id": f"e{next(_ids)}",
        "ts": ts,
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "input_tokens": 1000,
        "output_tokens": 100,
    }
    data.update(fields)
    event = UsageEvent.model_validate(data)
    c = None
    if cost is not None:
        d = Decimal(cost)
        c = Cost(d, Decimal(0), Decimal(0), Decimal(0), d, "test")
    return Fact(event=event, cost=c, ingested_at=ts)


def run(det: Any, facts: list[Fact]) -> list[Any]:
    """Feed a detector facts in order with the engine's watermark rule (newest ts seen)."""
    out: list[Any] = []
    wm = getattr(det, "_test_wm", None)
    for f in facts:
        wm = f.event.ts if wm is None or f.event.ts > wm else wm
        out.extend(det.observe(f, wm))
    det._test_wm = wm
    return out
