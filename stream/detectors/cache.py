"""``cache_hit_drop``: a feature's cache-read share of input tokens falls well below its own level.

Share = cache_read_tokens / input_tokens. The current UTC hour (once it has seen
``[detection] cache_min_input_tokens`` input tokens) is compared with the feature's share
over the previous 24 hours (which needs as many tokens and a share of at least
``cache_min_baseline_share``): it fires when the hour's share falls
``cache_drop_points`` or more below it — a workload that hit 90% now hitting 70% or less.
Once per feature and hour; features without a cache habit are never judged.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Self

from spendstream.config import Config
from spendstream.records import Alert, Fact
from spendstream.stream.detectors.base import PairBaselines, floor_hour, make_alert

__all__ = ["CacheDetector"]

HOUR = 3600
_PLACES = Decimal("0.0001")


class CacheDetector:
    name: ClassVar[str] = "cache"

    def __init__(self, config: Config) -> None:
        d = config.detection
        self.drop = d.cache_drop_points
        self.min_base_share = d.cache_min_baseline_share
        self.min_tokens = d.cache_min_input_tokens
        self.lateness_h = (d.allowed_lateness_s + HOUR - 1) // HOUR
        # feature -> hour (epoch s) -> [input tokens, cache-read tokens]
        self.hours: dict[str, dict[int, list[int]]] = {}
        self.fired: dict[str, list[int]] = {}  # feature -> hours it fired for
        # feature -> previous-24h (input tokens, cache-read tokens)
        self._base = PairBaselines()
        self._swept_hour = 0

    def observe(self, fact: Fact, watermark: datetime) -> list[Alert]:
        self._expire(watermark)
        ev = fact.event
        if ev.feature is None or ev.input_tokens == 0:
            return []
        hour = floor_hour(ev.ts)
        if hour < self._swept_hour - self.lateness_h * HOUR:
            return []
        buckets = self.hours.setdefault(ev.feature, {})
        self._base.touch(ev.feature, hour)
        cur = buckets.setdefault(hour, [0, 0])
        cur[0] += ev.input_tokens
        cur[1] += ev.cache_read_tokens
        if cur[0] < self.min_tokens or hour in self.fired.get(ev.feature, ()):
            return []
        base_in, base_read = self._base.sums(ev.feature, buckets, hour)
        if base_in < self.min_tokens:
            return []
        base_share = Decimal(base_read) / Decimal(base_in)
        share = Decimal(cur[1]) / Decimal(cur[0])
        if base_share < self.min_base_share or share > base_share - self.drop:
            return []
        self.fired.setdefault(ev.feature, []).append(hour)
        start = datetime.fromtimestamp(hour, UTC)
        scope = f"feature:{ev.feature}"
        return [
            make_alert(
                "cache_hit_drop",
                scope,
                "warning",
                ev.ts,
                share.quantize(_PLACES),
                (base_share - self.drop).quantize(_PLACES),
                f"{scope} read {share:.0%} of its input tokens from the prompt cache in the hour "
                f"from {start:%Y-%m-%d %H:00} UTC, against {base_share:.0%} over the previous 24 h",
                (start.isoformat(),),
                {
                    "window_start": start.isoformat(),
                    "baseline_share": str(base_share.quantize(_PLACES)),
                },
            )
        ]

    def _expire(self, watermark: datetime) -> None:
        hour = floor_hour(watermark)
        if hour <= self._swept_hour:
            return
        self._swept_hour = hour
        horizon = hour - 24 * HOUR - (self.lateness_h + 1) * HOUR
        for feature in list(self.hours):
            b = self.hours[feature]
            for h in [h for h in b if h < horizon]:
                del b[h]
            if not b:
                del self.hours[feature]
        self._base.clear()  # baselines may have lost expired hours
        for feature in list(self.fired):
            kept = [h for h in self.fired[feature] if h >= horizon]
            if kept:
                self.fired[feature] = kept
            else:
                del self.fired[feature]

    def snapshot(self) -> dict[str, Any]:
        return {
            "swept_hour": self._swept_hour,
            "hours": {f: {str(h): list(v) for h, v in b.items()} for f, b in self.hours.items()},
            "fired": {f: list(hs) for f, hs in self.fired.items()},
        }

    @classmethod
    def restore(cls, config: Config, data: dict[str, Any] | None) -> Self:
        det = cls(config)
        if data:
            det._swept_hour = int(data["swept_hour"])
            det.hours = {
                f: {int(h): [int(x) for x in v] for h, v in b.items()}
                for f, b in data["hours"].items()
            }
            det.fired = {f: [int(h) for h in hs] for f, hs in data["fired"].items()}
        return det
