"""``runaway_session``: a session over its turn count, its cost or its wall-clock duration.

A session's turn count is the number of calls it made, or its highest ``turn`` if that is
larger (turns are taken as 1-based): with ``max_session_turns = 100`` the 101st turn fires
and the 100th does not. Cost counts priced calls only; duration is the event-time span
from its first to its last call. Each limit fires once per session. A session idle for
``[detection] session_idle_s`` (event time) is forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Self

from spendstream.config import Config
from spendstream.records import Alert, Fact
from spendstream.stream.detectors.base import make_alert

__all__ = ["SessionDetector", "SessionState"]

_MINUTE_PLACES = Decimal("0.000001")


@dataclass(slots=True)
class SessionState:
    first_ts: datetime
    last_ts: datetime
    calls: int = 0
    max_turn: int = 0
    cost_usd: Decimal = Decimal(0)
    fired: set[str] = field(default_factory=set)

    @property
    def turns(self) -> int:
        return max(self.calls, self.max_turn)

    def to_json(self) -> dict[str, Any]:
        return {
            "first_ts": self.first_ts.isoformat(),
            "last_ts": self.last_ts.isoformat(),
            "calls": self.calls,
            "max_turn": self.max_turn,
            "cost_usd": str(self.cost_usd),
            "fired": sorted(self.fired),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SessionState:
        return cls(
            first_ts=datetime.fromisoformat(d["first_ts"]),
            last_ts=datetime.fromisoformat(d["last_ts"]),
            calls=int(d["calls"]),
            max_turn=int(d["max_turn"]),
            cost_usd=Decimal(d["cost_usd"]),
            fired=set(d["fired"]),
        )


class SessionDetector:
    name: ClassVar[str] = "sessions"

    def __init__(self, config: Config) -> None:
        rw = config.runaway
        self.max_turns = rw.max_session_turns
        self.max_cost_usd = rw.max_session_cost_usd
        self.max_minutes = rw.max_session_minutes
        self.max_duration = timedelta(seconds=float(rw.max_session_minutes * 60))
        self.idle = timedelta(seconds=config.detection.session_idle_s)
        self.sessions: dict[str, SessionState] = {}
        self._last_sweep: datetime | None = None

    def observe(self, fact: Fact, watermark: datetime) -> list[Alert]:
        self._expire(watermark)
        ev = fact.event
        if ev.session_id is None:
            return []
        st = self.sessions.get(ev.session_id)
        if st is None:
            st = self.sessions[ev.session_id] = SessionState(first_ts=ev.ts, last_ts=ev.ts)
        st.first_ts = min(st.first_ts, ev.ts)
        st.last_ts = max(st.last_ts, ev.ts)
        st.calls += 1
        if ev.turn is not None:
            st.max_turn = max(st.max_turn, ev.turn)
        if fact.cost is not None:
            st.cost_usd += fact.cost.cost_usd
        scope = f"session:{ev.session_id}"
        alerts = []
        span = st.last_ts - st.first_ts
        checks = (
            (
                "turns",
                Decimal(st.turns),
                Decimal(self.max_turns),
                "turns",
                st.turns > self.max_turns,
            ),
            ("cost", st.cost_usd, self.max_cost_usd, "USD", st.cost_usd > self.max_cost_usd),
            (
                "duration",
                # Reported to the millisecond; judged exactly on the timedelta.
                (Decimal(span // timedelta(milliseconds=1)) / 60_000).quantize(_MINUTE_PLACES),
                self.max_minutes,
                "minutes",
                span > self.max_duration,
            ),
        )
        for limit, value, threshold, unit, over in checks:
            if over and limit not in st.fired:
                st.fired.add(limit)
                alerts.append(
                    make_alert(
                        "runaway_session",
                        scope,
                        "critical",
                        ev.ts,
                        value,
                        threshold,
                        f"{scope} is over its {limit} limit: {value} {unit} > {threshold}",
                        (limit,),
                        {"limit": limit, "session_id": ev.session_id},
                    )
                )
        return alerts

    def _expire(self, watermark: datetime) -> None:
        # Sweeping once per idle/6 of event time keeps this O(1) per fact.
        if self._last_sweep is not None and watermark - self._last_sweep < self.idle / 6:
            return
        self._last_sweep = watermark
        cutoff = watermark - self.idle
        for sid in [s for s, st in self.sessions.items() if st.last_ts < cutoff]:
            del self.sessions[sid]

    def snapshot(self) -> dict[str, Any]:
        return {
            "last_sweep": None if self._last_sweep is None else self._last_sweep.isoformat(),
            "sessions": {s: st.to_json() for s, st in self.sessions.items()},
        }

    @classmethod
    def restore(cls, config: Config, data: dict[str, Any] | None) -> Self:
        det = cls(config)
        if data:
            ls = data.get("last_sweep")
            det._last_sweep = None if ls is None else datetime.fromisoformat(ls)
            det.sessions = {s: SessionState.from_json(d) for s, d in data["sessions"].items()}
        return det
