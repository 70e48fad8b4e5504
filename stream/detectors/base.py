"""The detector protocol and the small helpers every detector shares.

A detector is a small stateful object over event time: ``observe(fact)`` updates
its state and returns the alerts that fact caused; ``snapshot()`` returns its state
as JSON-ready data (Decimals and datetimes as strings) and ``restore(config, data)``
rebuilds it, so the embedded runner (workdir) and the Faust workers (tables) resume
alike. Detectors never read the wall clock and never do I/O: given the same facts in
the same order they return the same alerts, however the facts were batched.

``watermark`` is the largest event time the engine has seen; detectors use it to
expire state older than the allowed lateness (``[detection] allowed_lateness_s``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from spendstream.config import Config
from spendstream.producers.event import UsageEvent
from spendstream.records import Alert, AlertKind, Fact, Severity, stable_id
from spendstream.scopes import event_scope, event_scopes

__all__ = [
    "EPOCH",
    "Detector",
    "PairBaselines",
    "dec",
    "floor_hour",
    "floor_minute",
    "from_iso",
    "make_alert",
    "scope_of",
    "scopes_of",
    "to_iso",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@runtime_checkable
class Detector(Protocol):
    """What the DetectionEngine runs. ``name`` keys the detector's state in snapshots."""

    name: ClassVar[str]

    def observe(self, fact: Fact, watermark: datetime) -> list[Alert]:
        """Fold one fact into the state; return the alerts it caused (each condition once)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-ready data."""
        ...

    @classmethod
    def restore(cls, config: Config, data: dict[str, Any] | None) -> Self:
        """A detector continuing from ``data`` (None: a fresh one)."""
        ...


def make_alert(
    kind: AlertKind,
    scope: str,
    severity: Severity,
    ts: datetime,
    value: Decimal,
    threshold: Decimal,
    message: str,
    condition: Iterable[str],
    details: dict[str, str] | None = None,
) -> Alert:
    """An alert whose ids depend only on what the condition is, never on when it was seen.

    ``condition`` names the window, period or session the rule is judged over, so the
    embedded runtime and the Kafka runtime produce identical ``dedup_key``/``alert_id``.
    """
    dedup_key = "|".join((kind, scope, *condition))
    return Alert(
        alert_id=stable_id("alert", dedup_key),
        kind=kind,
        scope=scope,
        severity=severity,
        ts=ts,
        value=value,
        threshold=threshold,
        message=message,
        dedup_key=dedup_key,
        details=details or {},
    )


def scope_of(event: UsageEvent, kind: str) -> str | None:
    """The event's scope of one kind (``team`` -> ``team:search``), None when untagged."""
    return event_scope(event, kind)


def scopes_of(event: UsageEvent, kinds: Iterable[str]) -> list[str]:
    return event_scopes(event, kinds)


def floor_minute(ts: datetime) -> int:
    """Epoch seconds of the UTC minute holding ``ts``."""
    # timestamp() is exact for whole seconds and far cheaper than timedelta arithmetic.
    s = int(ts.timestamp() // 1)
    return s - s % 60


def floor_hour(ts: datetime) -> int:
    """Epoch seconds of the UTC clock hour holding ``ts``."""
    s = int(ts.timestamp() // 1)
    return s - s % 3600


def to_iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


def from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def dec(value: object) -> Decimal:
    return Decimal(str(value))


class PairBaselines:
    """Per key, the sums of hourly ``[a, b]`` counter buckets over the 24 hours before an
    hour, cached for that hour: summing the buckets for every event was most of the cache
    and retry detectors' cost. Derived, never persisted.

    ``touch(key, hour)`` before adding to a bucket: an event in any other hour (a late one)
    may fall inside the cached hour's baseline, so that cache is dropped. ``clear()`` when
    buckets expire."""

    def __init__(self) -> None:
        self._cached: dict[str, tuple[int, int, int]] = {}

    def touch(self, key: str, hour: int) -> None:
        cached = self._cached.get(key)
        if cached is not None and cached[0] != hour:
            del self._cached[key]

    def sums(self, key: str, buckets: dict[int, list[int]], hour: int) -> tuple[int, int]:
        cached = self._cached.get(key)
        if cached is None or cached[0] != hour:
            a = b = 0
            for h, (x, y) in buckets.items():
                if hour - 24 * 3600 <= h < hour:
                    a += x
                    b += y
            cached = self._cached[key] = (hour, a, b)
        return cached[1], cached[2]

    def clear(self) -> None:
        self._cached.clear()
