"""``hourly_anomaly``: an hour whose spend passes ``factor`` x its scope's recent hourly mean.

The contract's rule (``method = "plain"``, the default): for a scope, the spend so far in
a UTC clock hour exceeds ``factor`` times the mean hourly spend of the 24 hours before
that hour (empty hours count as zero). It fires at the crossing event, once per scope
and hour. A scope is not judged before its first event is at least 24 h before the hour
judged, nor while those 24 hours spent less than ``min_baseline_usd``. Unpriced facts
count zero.

``method = "seasonal"`` compares with the mean of the same clock hour on the previous
``seasonal_days`` days instead (and needs that many days of history), for strongly
diurnal traffic that the plain rule would flag every morning. ``min_baseline_usd`` still
applies to the previous 24 hours.

A late event adds to its own hour and may make that hour cross; it never fires an hour
twice. State per scope: hourly buckets for the baseline plus the allowed lateness; a
scope with no spend in that span is forgotten (and must warm up again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

from spendstream.config import Config
from spendstream.records import Alert, Fact
from spendstream.stream.detectors.base import floor_hour, make_alert, scopes_of

__all__ = ["AnomalyDetector"]

HOUR = 3600
DAY = 24 * HOUR
_PLACES = Decimal("0.000001")


@dataclass(slots=True)
class _Scope:
    first_ts: int  # epoch s of the scope's first event (any fact, priced or not)
    last_hour: int
    hours: dict[int, Decimal] = field(default_factory=dict)
    fired: set[int] = field(default_factory=set)
    # (hour, previous-24h sum, seasonal mean) last computed; derived, not persisted.
    cache: tuple[int, Decimal, Decimal] | None = None


class AnomalyDetector:
    name: ClassVar[str] = "anomaly"

    def __init__(self, config: Config) -> None:
        an = config.anomaly
        self.factor = an.factor
        self.min_baseline_usd = an.min_baseline_usd
        self.kinds = list(an.scopes)
        self.seasonal = an.method == "seasonal"
        self.days = an.seasonal_days
        self.lateness_h = (config.detection.allowed_lateness_s + HOUR - 1) // HOUR
        self.history_s = self.days * DAY if self.seasonal else DAY
        self.scopes: dict[str, _Scope] = {}
        self._swept_hour = 0

    def observe(self, fact: Fact, watermark: datetime) -> list[Alert]:
        self._expire(watermark)
        ev = fact.event
        hour = floor_hour(ev.ts)
        if hour < self._swept_hour - self.lateness_h * HOUR:
            return []
        ts_s = int(ev.ts.timestamp())
        cost = fact.cost.cost_usd if fact.cost is not None else Decimal(0)
        alerts = []
        for scope in scopes_of(ev, self.kinds):
            st = self.scopes.get(scope)
            if st is None:
                st = self.scopes[scope] = _Scope(first_ts=ts_s, last_hour=hour)
            st.first_ts = min(st.first_ts, ts_s)
            st.last_hour = max(st.last_hour, hour)
            spend = st.hours.get(hour, Decimal(0)) + cost
            st.hours[hour] = spend
            if st.cache is not None and st.cache[0] != hour and cost:
                # A (late) cost landing in an earlier hour may change the cached baseline.
                st.cache = None
            if hour in st.fired or st.first_ts > hour - self.history_s or cost == 0:
                continue
            last24, mean = self._baseline(st, hour)
            if last24 < self.min_baseline_usd:
                continue
            threshold = self.factor * mean
            if spend > threshold:
                st.fired.add(hour)
                alerts.append(self._alert(scope, fact, hour, spend, threshold, mean))
        return alerts

    def _baseline(self, st: _Scope, hour: int) -> tuple[Decimal, Decimal]:
        """(previous 24 h spend, the mean the hour is compared with); cached per hour."""
        if st.cache is not None and st.cache[0] == hour:
            return st.cache[1], st.cache[2]
        zero = Decimal(0)
        last24 = sum((st.hours.get(hour - i * HOUR, zero) for i in range(1, 25)), zero)
        if self.seasonal:
            same_hour = (st.hours.get(hour - d * DAY, zero) for d in range(1, self.days + 1))
            mean = sum(same_hour, zero) / self.days
        else:
            mean = last24 / 24
        st.cache = (hour, last24, mean)
        return last24, mean

    def _alert(
        self, scope: str, fact: Fact, hour: int, spend: Decimal, threshold: Decimal, mean: Decimal
    ) -> Alert:
        start = datetime.fromtimestamp(hour, UTC)
        basis = (
            f"the same hour's mean over the previous {self.days} days"
            if self.seasonal
            else "the previous 24 h mean hourly spend"
        )
        return make_alert(
            "hourly_anomaly",
            scope,
            "warning",
            fact.event.ts,
            spend,
            threshold.quantize(_PLACES),
            f"{scope} spent ${spend.quantize(Decimal('0.01'))} in the hour from "
            f"{start:%Y-%m-%d %H:00} UTC, over {self.factor} x {basis} "
            f"(${mean.quantize(Decimal('0.01'))})",
            (start.isoformat(),),
            {
                "window_start": start.isoformat(),
                "baseline_mean_usd": str(mean.quantize(_PLACES)),
                "method": "seasonal" if self.seasonal else "plain",
            },
        )

    def _expire(self, watermark: datetime) -> None:
        hour = floor_hour(watermark)
        if hour <= self._swept_hour:
            return
        self._swept_hour = hour
        horizon = hour - self.history_s - (self.lateness_h + 1) * HOUR
        for scope in list(self.scopes):
            st = self.scopes[scope]
            if st.last_hour < horizon:
                del self.scopes[scope]
                continue
            for h in [h for h in st.hours if h < horizon]:
                del st.hours[h]
            st.fired = {h for h in st.fired if h >= horizon}

    def snapshot(self) -> dict[str, Any]:
        return {
            "swept_hour": self._swept_hour,
            "scopes": {
                s: {
                    "first_ts": st.first_ts,
                    "last_hour": st.last_hour,
                    "hours": {str(h): str(v) for h, v in st.hours.items()},
                    "fired": sorted(st.fired),
                }
                for s, st in self.scopes.items()
            },
        }

    @classmethod
    def restore(cls, config: Config, data: dict[str, Any] | None) -> Self:
        det = cls(config)
        if data:
            det._swept_hour = int(data["swept_hour"])
            det.scopes = {
                s: _Scope(
                    first_ts=int(d["first_ts"]),
                    last_hour=int(d["last_hour"]),
                    hours={int(h): Decimal(v) for h, v in d["hours"].items()},
                    fired={int(h) for h in d["fired"]},
                )
                for s, d in data["scopes"].items()
            }
        return det
