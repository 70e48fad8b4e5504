"""Circuit breakers: one state machine per scope, driven by alerts and event time.

    closed ──alert in [breaker].open_on──► open ──(rule of the alert kind)──► half_open / closed
                                            ▲                                     │
                                            └──── the same kind trips again ◄─────┘ (half_open)

Closing rules, all in event time (the newest event time seen, the watermark):

* ``runaway_session``, ``unpriced_model``: stay open (a runaway agent run is over), until
  retired after ``[breaker] stay_open_retention_s`` (7 days) so state stays bounded;
* ``budget_exceeded``: closed when the budget's period ends;
* every other kind (``runaway_rate``, ``retry_storm``, ...): half-open after
  ``[breaker] rate_cooldown_s``; closed one minute later unless it tripped again meanwhile.
  The client lets calls through while half-open, so a loop that resumes trips it again.
* any breaker: ``reset(scope, ts)`` (``spendstream breakers reset SCOPE``).

Every transition is a ``BreakerEvent`` whose ``ts`` is the event time that caused it.
Closed breakers are not kept: closed is every scope's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from spendstream.config import BreakerConfig
from spendstream.records import Alert, BreakerEvent, BreakerState
from spendstream.stream.windows import from_us, to_us

__all__ = ["HALF_OPEN_S", "BreakerBoard", "BreakerStatus", "BreakerWire"]

HALF_OPEN_S = 60
_STAY_OPEN = frozenset({"runaway_session", "unpriced_model"})


def _span(length: timedelta) -> str:
    """7 days as "7 days", 36 h as "36 h", 90 s as "90 s": the unit the config key was likely
    written in ("0 days" said nothing of a retention of an hour)."""
    seconds = int(length.total_seconds())
    if seconds and seconds % 86_400 == 0:
        days = seconds // 86_400
        return "1 day" if days == 1 else f"{days} days"
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds} s"


class BreakerStatus(NamedTuple):
    state: BreakerState
    reason: str
    since: datetime


@dataclass(slots=True)
class _Breaker:
    state: BreakerState
    reason: str
    since: datetime
    kind: str
    until: datetime | None  # when the next automatic transition is due (None: never)

    def to_wire(self, scope: str) -> BreakerWire:
        until = None if self.until is None else to_us(self.until)
        return [scope, self.state, self.reason, to_us(self.since), self.kind, until]

    @classmethod
    def from_wire(cls, w: BreakerWire) -> tuple[str, _Breaker]:
        scope, state, reason, since, kind, until = w
        return str(scope), cls(
            state=state,  # type: ignore[arg-type]
            reason=str(reason),
            since=from_us(int(since)),  # type: ignore[arg-type]
            kind=str(kind),
            until=None if until is None else from_us(int(until)),  # type: ignore[arg-type]
        )


# One breaker in a snapshot: [scope, state, reason, since_us, kind, until_us | None].
BreakerWire = list[str | int | None]


class BreakerBoard:
    """All breakers that are not closed, and the rules that move them."""

    def __init__(self, config: BreakerConfig) -> None:
        self.open_on = frozenset(config.open_on)
        self.cooldown = timedelta(seconds=config.rate_cooldown_s)
        self.retention = timedelta(seconds=config.stay_open_retention_s)
        self.breakers: dict[str, _Breaker] = {}
        self._next_due: datetime | None = None
        self._due_us: int | None = None

    def on_alert(self, alert: Alert) -> BreakerEvent | None:
        """Open the alert's scope if its kind is in ``open_on``; None when nothing changes."""
        if alert.kind not in self.open_on:
            return None
        until = self._until(alert)
        current = self.breakers.get(alert.scope)
        if current is not None and current.state == "open":
            # Already open: the rule that keeps it open longer wins, and decides how it closes
            # (a session breaker that ran away by rate first then stays open as a session's).
            if current.until is not None and (until is None or until > current.until):
                current.until = until
                if alert.kind != current.kind:
                    current.kind = alert.kind
                    current.reason = f"{alert.kind}: {alert.message}"
                self._recompute_due()
            return None
        reason = f"{alert.kind}: {alert.message}"
        self.breakers[alert.scope] = _Breaker("open", reason, alert.ts, alert.kind, until)
        self._recompute_due()
        return BreakerEvent(scope=alert.scope, state="open", reason=reason, ts=alert.ts)

    def _until(self, alert: Alert) -> datetime | None:
        if alert.kind in _STAY_OPEN:
            return alert.ts + self.retention
        if alert.kind == "budget_exceeded" and "period_end" in alert.details:
            return datetime.fromisoformat(alert.details["period_end"])
        return alert.ts + self.cooldown

    def tick(self, watermark: datetime) -> list[BreakerEvent]:
        """The automatic transitions due by event time ``watermark``."""
        if self._next_due is None or watermark < self._next_due:
            return []
        events = []
        for scope in sorted(self.breakers):
            b = self.breakers[scope]
            if b.until is None or b.until > watermark:
                continue
            if b.state == "open" and b.kind != "budget_exceeded" and b.kind not in _STAY_OPEN:
                b.state, b.since = "half_open", watermark
                b.until = watermark + timedelta(seconds=HALF_OPEN_S)
                b.reason = f"{b.kind}: cool-down of {int(self.cooldown.total_seconds())} s elapsed"
                events.append(BreakerEvent(scope, "half_open", b.reason, watermark))
            else:
                if b.kind == "budget_exceeded":
                    why = "budget period ended"
                elif b.kind in _STAY_OPEN:
                    why = f"retired after {_span(self.retention)} open"
                else:
                    why = "did not trip again"
                del self.breakers[scope]
                events.append(BreakerEvent(scope, "closed", f"{b.kind}: {why}", watermark))
        self._recompute_due()
        return events

    def reset(self, scope: str, ts: datetime) -> BreakerEvent | None:
        """Close ``scope`` by hand; None when it was not open or half-open."""
        if self.breakers.pop(scope, None) is None:
            return None
        self._recompute_due()
        return BreakerEvent(scope=scope, state="closed", reason="manual reset", ts=ts)

    def status(self) -> dict[str, BreakerStatus]:
        return {
            s: BreakerStatus(b.state, b.reason, b.since) for s, b in sorted(self.breakers.items())
        }

    @property
    def due_us(self) -> int | None:
        """When the next automatic transition is due (event time, us); None: never."""
        return self._due_us

    def _recompute_due(self) -> None:
        dues = [b.until for b in self.breakers.values() if b.until is not None]
        self._next_due = min(dues) if dues else None
        self._due_us = None if self._next_due is None else to_us(self._next_due)

    def snapshot(self) -> list[BreakerWire]:
        return [b.to_wire(s) for s, b in sorted(self.breakers.items())]

    @classmethod
    def restore(cls, config: BreakerConfig, data: list[BreakerWire] | None) -> BreakerBoard:
        board = cls(config)
        if data:
            board.breakers = dict(_Breaker.from_wire(w) for w in data)
            board._recompute_due()
        return board
