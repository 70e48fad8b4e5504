"""``runaway_rate``: calls per UTC minute of one api key, and of one session, over the limit.

Windows are tumbling event-time minutes, so every runtime cuts them alike. The call
that makes a window's count exceed ``[runaway] max_calls_per_minute`` fires, once per
scope and minute. A late event counts toward its own minute while that minute is within
the allowed lateness; older minutes are forgotten.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

from spendstream.config import Config
from spendstream.records import Alert, Fact
from spendstream.stream.detectors.base import floor_minute, make_alert, scopes_of

__all__ = ["RateDetector"]

_KINDS = ("api_key", "session")


class RateDetector:
    name: ClassVar[str] = "rate"

    def __init__(self, config: Config) -> None:
        self.limit = config.runaway.max_calls_per_minute
        self.lateness_s = config.detection.allowed_lateness_s
        # scope -> minute (epoch s) -> calls; a count above the limit means it already fired.
        self.windows: dict[str, dict[int, int]] = {}
        self._expired_below = 0
        self._next_sweep: datetime | None = None  # derived, not persisted

    def observe(self, fact: Fact, watermark: datetime) -> list[Alert]:
        self._expire(watermark)
        minute = floor_minute(fact.event.ts)
        if minute < self._expired_below:
            return []
        alerts = []
        for scope in scopes_of(fact.event, _KINDS):
            counts = self.windows.setdefault(scope, {})
            n = counts.get(minute, 0) + 1
            counts[minute] = n
            if n == self.limit + 1:
                start = datetime.fromtimestamp(minute, UTC)
                alerts.append(
                    make_alert(
                        "runaway_rate",
                        scope,
                        "critical",
                        fact.event.ts,
                        Decimal(n),
                        Decimal(self.limit),
                        f"{scope} made more than {self.limit} calls in the minute from "
                        f"{start:%Y-%m-%d %H:%M} UTC",
                        (start.isoformat(),),
                        {"window_start": start.isoformat(), "window_s": "60"},
                    )
                )
        return alerts

    def _expire(self, watermark: datetime) -> None:
        if self._next_sweep is not None and watermark < self._next_sweep:
            return
        horizon = floor_minute(watermark) - 60 * ((self.lateness_s + 59) // 60)
        self._next_sweep = datetime.fromtimestamp(floor_minute(watermark) + 60, UTC)
        if horizon <= self._expired_below:
            return
        self._expired_below = horizon
        for scope in list(self.windows):
            counts = self.windows[scope]
            for minute in [m for m in counts if m < horizon]:
                del counts[minute]
            if not counts:
                del self.windows[scope]

    def snapshot(self) -> dict[str, Any]:
        return {
            "expired_below": self._expired_below,
            "windows": {s: {str(m): n for m, n in c.items()} for s, c in self.windows.items()},
        }

    @classmethod
    def restore(cls, config: Config, data: dict[str, Any] | None) -> Self:
        det = cls(config)
        if data:
            det._expired_below = int(data["expired_below"])
            det.windows = {
                s: {int(m): int(n) for m, n in c.items()} for s, c in data["windows"].items()
            }
        return det
