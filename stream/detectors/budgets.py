"""Budgets: ``budget_threshold`` at each alert level, ``budget_exceeded`` at the hard limit.

Each ``[[budget]]`` counts the priced spend of the facts in its scope over UTC calendar
periods (month, day or hour). A level is crossed when the period's spend reaches
``level x amount_usd``; each level alerts once per period, at the crossing event.
At ``hard_limit x amount_usd`` (when set) ``budget_exceeded`` fires once per period, and
the breaker of the budget's scope opens until the next period begins.

Severity: levels below 0.8 are ``info``, below 1.0 ``warning``, from 1.0 ``critical``;
``budget_exceeded`` is ``critical``. A late event counts toward its own period while that
period is within the allowed lateness of the newest event time seen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Self

from spendstream.config import BudgetConfig, Config
from spendstream.producers.event import UsageEvent
from spendstream.records import Alert, Fact, Severity
from spendstream.stream.detectors.base import make_alert, scope_of

__all__ = ["BudgetDetector", "budget_id", "period_bounds"]


def period_bounds(ts: datetime, period: str) -> tuple[datetime, datetime]:
    """The UTC calendar period holding ``ts``: [start, end)."""
    ts = ts.astimezone(UTC)
    if period == "hour":
        start = ts.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if period == "day":
        start = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def budget_id(b: BudgetConfig) -> str:
    """Names a budget in state and alerts; stable while its scope, period and amount are."""
    return f"{b.scope}/{b.period}/{b.amount_usd}"


def _severity(level: Decimal) -> Severity:
    if level < Decimal("0.8"):
        return "info"
    if level < 1:
        return "warning"
    return "critical"


def _in_scope(event: UsageEvent, scope: str) -> bool:
    kind = scope.split(":", 1)[0]
    return scope_of(event, kind) == scope


class BudgetDetector:
    name: ClassVar[str] = "budgets"

    def __init__(self, config: Config) -> None:
        self.budgets = list(config.budget)
        self.lateness = timedelta(seconds=config.detection.allowed_lateness_s)
        # budget id -> period start iso -> {"spend": Decimal, "fired": set of level strings}
        self.periods: dict[str, dict[str, dict[str, Any]]] = {}
        self._watermark: datetime | None = None
        # Derived caches, not persisted: the last period seen per budget, the next expiry.
        self._bounds: dict[int, tuple[datetime, datetime]] = {}
        self._next_expiry: datetime | None = None

    def observe(self, fact: Fact, watermark: datetime) -> list[Alert]:
        self._expire(watermark)
        if fact.cost is None or not self.budgets:
            return []
        ev = fact.event
        alerts = []
        for i, b in enumerate(self.budgets):
            if not _in_scope(ev, b.scope):
                continue
            bounds = self._bounds.get(i)
            if bounds is None or not bounds[0] <= ev.ts < bounds[1]:
                bounds = self._bounds[i] = period_bounds(ev.ts, b.period)
            start, end = bounds
            if end + self.lateness < watermark:
                continue
            bid = budget_id(b)
            key = start.isoformat()
            per = self.periods.setdefault(bid, {}).setdefault(
                key, {"spend": Decimal(0), "fired": set(), "end": end.isoformat()}
            )
            per["spend"] += fact.cost.cost_usd
            spend: Decimal = per["spend"]
            fired: set[str] = per["fired"]
            details = {
                "budget": bid,
                "period": b.period,
                "period_start": key,
                "period_end": end.isoformat(),
                "amount_usd": str(b.amount_usd),
            }
            for level in sorted(b.alert_at):
                tag = str(level)
                if tag in fired or spend < level * b.amount_usd:
                    continue
                fired.add(tag)
                alerts.append(
                    make_alert(
                        "budget_threshold",
                        b.scope,
                        _severity(level),
                        ev.ts,
                        spend,
                        level * b.amount_usd,
                        f"{b.scope} spent ${spend.quantize(Decimal('0.01'))} of its "
                        f"${b.amount_usd} {b.period} budget ({level:%} level) in the period "
                        f"from {start:%Y-%m-%d %H:00} UTC",
                        (b.period, str(b.amount_usd), key, tag),
                        {**details, "level": tag},
                    )
                )
            if b.hard_limit is not None and "hard" not in fired:
                limit = b.hard_limit * b.amount_usd
                if spend >= limit:
                    fired.add("hard")
                    alerts.append(
                        make_alert(
                            "budget_exceeded",
                            b.scope,
                            "critical",
                            ev.ts,
                            spend,
                            limit,
                            f"{b.scope} spent ${spend.quantize(Decimal('0.01'))}, past the hard "
                            f"limit of {b.hard_limit} x its ${b.amount_usd} {b.period} budget",
                            (b.period, str(b.amount_usd), key),
                            {**details, "hard_limit": str(b.hard_limit)},
                        )
                    )
        return alerts

    def _expire(self, watermark: datetime) -> None:
        if self._watermark is not None and watermark <= self._watermark:
            return
        self._watermark = watermark
        if self._next_expiry is not None and watermark <= self._next_expiry:
            return
        ends = [
            datetime.fromisoformat(p["end"]) + self.lateness
            for pers in self.periods.values()
            for p in pers.values()
        ]
        self._next_expiry = min(ends) if ends else None
        if self._next_expiry is None or watermark <= self._next_expiry:
            return
        for bid in list(self.periods):
            pers = self.periods[bid]
            for key in [
                k
                for k, p in pers.items()
                if datetime.fromisoformat(p["end"]) + self.lateness < watermark
            ]:
                del pers[key]
            if not pers:
                del self.periods[bid]

    def snapshot(self) -> dict[str, Any]:
        return {
            "watermark": None if self._watermark is None else self._watermark.isoformat(),
            "periods": {
                bid: {
                    k: {"spend": str(p["spend"]), "fired": sorted(p["fired"]), "end": p["end"]}
                    for k, p in pers.items()
                }
                for bid, pers in self.periods.items()
            },
        }

    @classmethod
    def restore(cls, config: Config, data: dict[str, Any] | None) -> Self:
        det = cls(config)
        if data:
            wm = data.get("watermark")
            det._watermark = None if wm is None else datetime.fromisoformat(wm)
            det.periods = {
                bid: {
                    k: {"spend": Decimal(p["spend"]), "fired": set(p["fired"]), "end": p["end"]}
                    for k, p in pers.items()
                }
                for bid, pers in data["periods"].items()
            }
        return det
