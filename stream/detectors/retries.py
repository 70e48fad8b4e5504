"""``retry_storm``: retries silently multiply the bill.

Two forms, both ``retry_storm``:

* one ``request_id`` over ``[runaway] max_attempts`` attempts (its highest ``attempt``, or
  the number of calls carrying it if larger). Fires once per request; the scope is the
  call's api key, else its session, else ``global``. A request idle for the allowed
  lateness is forgotten.
* an api key whose error/retry share (calls with ``status != "ok"`` or ``attempt > 1``) in
  the current UTC hour, over at least ``[detection] retry_min_calls`` calls, reaches
  ``retry_min_share`` and is more than ``retry_share_factor`` times its share over the
  previous 24 hours (which must itself hold ``retry_min_calls`` calls). Once per key and hour.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

from spendstream.config import Config
from spendstream.records import Alert, Fact
from spendstream.stream.detectors.base import PairBaselines, floor_hour, make_alert

__all__ = ["RetryDetector"]

_SHARE_PLACES = Decimal("0.0001")


class RetryDetector:
    name: ClassVar[str] = "retries"

    def __init__(self, config: Config) -> None:
        self.max_attempts = config.runaway.max_attempts
        det = config.detection
        self.lateness_s = det.allowed_lateness_s
        self.share_factor = det.retry_share_factor
        self.min_share = det.retry_min_share
        self.min_calls = det.retry_min_calls
        # request_id -> [attempts seen, calls seen, last ts (epoch s), fired 0/1]
        self.requests: dict[str, list[int]] = {}
        # api key -> hour (epoch s) -> [calls, failed or retried calls]
        self.hours: dict[str, dict[int, list[int]]] = {}
        self.fired_hours: dict[str, int] = {}  # api key -> last hour it fired for
        # api key -> previous-24h (calls, failed or retried calls)
        self._base = PairBaselines()
        self._swept_hour = 0

    def observe(self, fact: Fact, watermark: datetime) -> list[Alert]:
        self._expire(watermark)
        ev = fact.event
        alerts: list[Alert] = []
        ts_s = int(ev.ts.timestamp())
        scope = (
            f"api_key:{ev.api_key_id}"
            if ev.api_key_id
            else (f"session:{ev.session_id}" if ev.session_id else "global")
        )
        if ev.request_id is not None:
            req = self.requests.setdefault(ev.request_id, [0, 0, ts_s, 0])
            req[0] = max(req[0], ev.attempt)
            req[1] += 1
            req[2] = max(req[2], ts_s)
            attempts = max(req[0], req[1])
            if attempts > self.max_attempts and not req[3]:
                req[3] = 1
                alerts.append(
                    make_alert(
                        "retry_storm",
                        scope,
                        "warning",
                        ev.ts,
                        Decimal(attempts),
                        Decimal(self.max_attempts),
                        f"request {ev.request_id} on {scope} made {attempts} attempts "
                        f"(limit {self.max_attempts})",
                        ("request", ev.request_id),
                        {"request_id": ev.request_id, "form": "attempts"},
                    )
                )
        if ev.api_key_id is not None:
            alert = self._share(ev.api_key_id, ev.status != "ok" or ev.attempt > 1, fact)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _share(self, key: str, bad: bool, fact: Fact) -> Alert | None:
        hour = floor_hour(fact.event.ts)
        if hour < self._swept_hour - 24 * 3600:
            return None
        buckets = self.hours.setdefault(key, {})
        self._base.touch(key, hour)
        cur = buckets.setdefault(hour, [0, 0])
        cur[0] += 1
        cur[1] += int(bad)
        if cur[0] < self.min_calls or self.fired_hours.get(key, -1) >= hour:
            return None
        # Cheap test first: most hours are below the minimum share whatever the baseline.
        if cur[1] < self.min_share * cur[0]:
            return None
        base_calls, base_bad = self._base.sums(key, buckets, hour)
        if base_calls < self.min_calls:
            return None
        share = Decimal(cur[1]) / Decimal(cur[0])
        base_share = Decimal(base_bad) / Decimal(base_calls)
        threshold = max(self.min_share, self.share_factor * base_share)
        if share < self.min_share or share <= self.share_factor * base_share:
            return None
        self.fired_hours[key] = hour
        start = datetime.fromtimestamp(hour, UTC)
        scope = f"api_key:{key}"
        return make_alert(
            "retry_storm",
            scope,
            "warning",
            fact.event.ts,
            share.quantize(_SHARE_PLACES),
            threshold.quantize(_SHARE_PLACES),
            f"{scope}: {share:.0%} of calls failed or were retries in the hour from "
            f"{start:%Y-%m-%d %H:00} UTC, against {base_share:.0%} over the previous 24 h",
            ("share", start.isoformat()),
            {"form": "share", "window_start": start.isoformat()},
        )

    def _expire(self, watermark: datetime) -> None:
        hour = floor_hour(watermark)
        if hour <= self._swept_hour:
            return
        self._swept_hour = hour
        # Keep 24 h of baseline plus the hours a late event may still land in.
        horizon = hour - 24 * 3600 - 3600 * ((self.lateness_s + 3599) // 3600)
        for key in list(self.hours):
            b = self.hours[key]
            for h in [h for h in b if h < horizon]:
                del b[h]
            if not b:
                del self.hours[key]
                self.fired_hours.pop(key, None)
        self._base.clear()  # baselines may have lost expired hours
        req_cutoff = int(watermark.timestamp()) - max(self.lateness_s, 3600)
        for rid in [r for r, v in self.requests.items() if v[2] < req_cutoff]:
            del self.requests[rid]

    def snapshot(self) -> dict[str, Any]:
        return {
            "swept_hour": self._swept_hour,
            "requests": {r: list(v) for r, v in self.requests.items()},
            "hours": {k: {str(h): list(v) for h, v in b.items()} for k, b in self.hours.items()},
            "fired_hours": dict(self.fired_hours),
        }

    @classmethod
    def restore(cls, config: Config, data: dict[str, Any] | None) -> Self:
        det = cls(config)
        if data:
            det._swept_hour = int(data["swept_hour"])
            det.requests = {r: [int(x) for x in v] for r, v in data["requests"].items()}
            det.hours = {
                k: {int(h): [int(x) for x in v] for h, v in b.items()}
                for k, b in data["hours"].items()
            }
            det.fired_hours = {k: int(h) for k, h in data["fired_hours"].items()}
        return det
