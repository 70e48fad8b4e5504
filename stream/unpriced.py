"""``unpriced_model``: a call landed without a price -- once per (provider, model) and UTC day.

Such facts still land (``priced = false``, null costs); this alert says which model needs a
``[[prices.model]]`` entry. Scope ``global``: the missing price is the catalog's, not a
team's. ``value`` is 1 (the call that revealed it), ``threshold`` 0. Days older than the
allowed lateness are forgotten, as in every detector, so the state stays small.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

from spendstream.config import Config
from spendstream.records import Alert, Fact
from spendstream.stream.detectors.base import EPOCH, make_alert

__all__ = ["UnpricedModelDetector"]

DAY = 86_400


def _day(ts: datetime) -> int:
    s = int((ts - EPOCH).total_seconds())
    return s - s % DAY


class UnpricedModelDetector:
    """Raises one ``unpriced_model`` alert per model and UTC day with unpriced calls."""

    name: ClassVar[str] = "unpriced_model"

    def __init__(self, config: Config) -> None:
        self.lateness_s = config.detection.allowed_lateness_s
        # "provider/model" -> the UTC days (epoch s) it already alerted for
        self.fired: dict[str, list[int]] = {}
        self._swept_day = 0

    def observe(self, fact: Fact, watermark: datetime) -> list[Alert]:
        self._expire(watermark)
        if fact.cost is not None:
            return []
        ev = fact.event
        day = _day(ev.ts)
        if day < self._horizon():
            return []
        model = f"{ev.provider}/{ev.model}"
        days = self.fired.setdefault(model, [])
        if day in days:
            return []
        days.append(day)
        start = datetime.fromtimestamp(day, UTC)
        return [
            make_alert(
                "unpriced_model",
                "global",
                "warning",
                ev.ts,
                Decimal(1),
                Decimal(0),
                f"no price for {model}: its calls on {start:%Y-%m-%d} land with priced = false "
                "and null costs; add a [[prices.model]] entry to the configuration "
                "(`spendstream prices unpriced` lists every such model)",
                (model, start.date().isoformat()),
                {"provider": ev.provider, "model": ev.model, "day": start.date().isoformat()},
            )
        ]

    def _horizon(self) -> int:
        return self._swept_day - DAY * (1 + self.lateness_s // DAY)

    def _expire(self, watermark: datetime) -> None:
        day = _day(watermark)
        if day <= self._swept_day:
            return
        self._swept_day = day
        horizon = self._horizon()
        for model in list(self.fired):
            kept = [d for d in self.fired[model] if d >= horizon]
            if kept:
                self.fired[model] = kept
            else:
                del self.fired[model]

    def snapshot(self) -> dict[str, Any]:
        return {"fired": {m: list(d) for m, d in self.fired.items()}, "swept_day": self._swept_day}

    @classmethod
    def restore(cls, config: Config, data: dict[str, Any] | None) -> Self:
        det = cls(config)
        if data:
            det.fired = {str(m): [int(x) for x in d] for m, d in data.get("fired", {}).items()}
            det._swept_day = int(data.get("swept_day", 0))
        return det
