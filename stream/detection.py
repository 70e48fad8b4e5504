"""The DetectionEngine: every detector and the breakers, over facts in order.

The engine is the one object both runtimes hold: the embedded runner persists its
``snapshot()`` in the workdir with each warehouse commit, the Faust workers keep it in a
table. It is pure (no I/O, no wall clock): the same facts in the same order give the
same alerts and breaker events, however they are split into batches and however often
the state is snapshotted and restored in between.

Lateness: the watermark is the newest event time seen. A fact up to
``[detection] allowed_lateness_s`` behind it counts toward its own windows (minute,
hour, period); an older one still lands in the warehouse but moves no detector. No
condition fires twice: detectors fire once per condition, and the engine also drops an
alert whose ``dedup_key`` it already emitted within the retained span.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from spendstream.config import Config
from spendstream.records import Alert, BreakerEvent, Fact
from spendstream.stream.breakers import BreakerBoard, BreakerStatus
from spendstream.stream.detectors.anomaly import AnomalyDetector
from spendstream.stream.detectors.base import Detector
from spendstream.stream.detectors.budgets import BudgetDetector
from spendstream.stream.detectors.cache import CacheDetector
from spendstream.stream.detectors.rate import RateDetector
from spendstream.stream.detectors.retries import RetryDetector
from spendstream.stream.detectors.sessions import SessionDetector

__all__ = ["SNAPSHOT_VERSION", "DetectionEngine", "detector_types"]

SNAPSHOT_VERSION = 1


def detector_types() -> list[type[Detector]]:
    """Every detector, in the fixed order the engine runs them (order is part of determinism)."""
    types: list[type[Detector]] = [
        RateDetector,
        SessionDetector,
        RetryDetector,
        AnomalyDetector,
        BudgetDetector,
        CacheDetector,
    ]
    # unpriced_model belongs to the pricing module's owner; join it when it exists.
    try:
        unpriced = importlib.import_module("spendstream.stream.unpriced")
    except ModuleNotFoundError:
        return types
    for attr in getattr(unpriced, "__all__", ()):
        obj = getattr(unpriced, attr)
        if (
            isinstance(obj, type)
            and isinstance(getattr(obj, "name", None), str)
            and hasattr(obj, "observe")
        ):
            types.append(obj)
    return types


class DetectionEngine:
    """Runs all detectors plus the breaker board over batches of facts."""

    def __init__(self, config: Config, snapshot: dict[str, Any] | None = None) -> None:
        self.config = config
        snap = snapshot or {}
        states = snap.get("detectors", {})
        self.detectors: list[Detector] = [
            t.restore(config, states.get(t.name)) for t in detector_types()
        ]
        self.board = BreakerBoard.restore(config.breaker, snap.get("breakers"))
        wm = snap.get("watermark")
        self.watermark: datetime | None = None if wm is None else datetime.fromisoformat(wm)
        # The furthest time breakers were moved to without events (advance_breakers).
        bc = snap.get("breaker_clock")
        self.breaker_clock: datetime | None = None if bc is None else datetime.fromisoformat(bc)
        self.emitted: dict[str, int] = {k: int(v) for k, v in snap.get("emitted", {}).items()}
        self._retain_s = 2 * max(
            config.detection.allowed_lateness_s, config.detection.session_idle_s, 86_400
        )
        self._swept_at = int(snap.get("swept_at", 0))

    @classmethod
    def restore(cls, config: Config, snapshot: dict[str, Any] | None) -> DetectionEngine:
        if snapshot is not None and snapshot.get("version", SNAPSHOT_VERSION) != SNAPSHOT_VERSION:
            # A state from another layout is not trusted: start warm-up again.
            snapshot = None
        return cls(config, snapshot)

    def process(self, facts: Sequence[Fact]) -> tuple[list[Alert], list[BreakerEvent]]:
        alerts: list[Alert] = []
        events: list[BreakerEvent] = []
        for fact in facts:
            ts = fact.event.ts
            if self.watermark is None or ts > self.watermark:
                self.watermark = ts
                events.extend(self.board.tick(ts))
                self._sweep(ts)
            wm = self.watermark
            for det in self.detectors:
                for alert in det.observe(fact, wm):
                    if alert.dedup_key in self.emitted:
                        continue
                    self.emitted[alert.dedup_key] = int(alert.ts.timestamp())
                    alerts.append(alert)
                    change = self.board.on_alert(alert)
                    if change is not None:
                        events.append(change)
        return alerts, events

    @property
    def breaker_time(self) -> datetime | None:
        """How far breakers have moved: the newest event time, or a later advance."""
        if self.watermark is None or self.breaker_clock is None:
            return self.watermark
        return max(self.watermark, self.breaker_clock)

    def advance_breakers(self, ts: datetime) -> list[BreakerEvent]:
        """Breaker transitions due by ``ts`` when no event carries the time there (a quiet
        stream). The detectors' watermark stays where the events left it."""
        now = self.breaker_time
        if now is None or ts <= now:
            return []
        self.breaker_clock = ts
        return self.board.tick(ts)

    def reset_breaker(self, scope: str, ts: datetime) -> BreakerEvent | None:
        """Close ``scope``'s breaker by hand (``spendstream breakers reset``)."""
        return self.board.reset(scope, ts)

    def breakers(self) -> dict[str, BreakerStatus]:
        """Every breaker that is not closed: scope -> (state, reason, since)."""
        return self.board.status()

    def _sweep(self, watermark: datetime) -> None:
        now = int(watermark.timestamp())
        if now - self._swept_at < 3600:
            return
        self._swept_at = now
        cutoff = now - self._retain_s
        self.emitted = {k: t for k, t in self.emitted.items() if t >= cutoff}

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-ready data (Decimals and datetimes as strings)."""
        return {
            "version": SNAPSHOT_VERSION,
            "watermark": None if self.watermark is None else self.watermark.isoformat(),
            "breaker_clock": None if self.breaker_clock is None else self.breaker_clock.isoformat(),
            "swept_at": self._swept_at,
            "emitted": dict(self.emitted),
            "detectors": {d.name: d.snapshot() for d in self.detectors},
            "breakers": self.board.snapshot(),
        }
