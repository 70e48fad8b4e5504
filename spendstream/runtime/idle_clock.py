"""``[breaker] idle_advance_s``: breakers of a quiet live stream move on by processing time.

Shared by ``spendstream run`` (each usage partition's and scope owner's engine) and a live
``spendstream ingest -`` (its one engine): on a file, breakers move by event time alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from spendstream.records import BreakerEvent

__all__ = ["IdleClock"]


class _Breakers(Protocol):
    @property
    def breaker_time(self) -> datetime | None: ...

    def advance_breakers(self, ts: datetime) -> list[BreakerEvent]: ...


@dataclass(slots=True)
class IdleClock:
    """When an engine has judged nothing for ``wait_s`` (processing time), its breakers move
    on by the quiet time, as if event time had passed (a key whose breaker stopped its only
    traffic must still close). ``wait_s`` 0: never."""

    wait_s: float
    clock: Callable[[], float] = time.monotonic
    judged_at: float = field(default=0.0)
    advanced_at: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.judged_at = self.advanced_at = self.clock()

    def judged(self) -> None:
        self.judged_at = self.advanced_at = self.clock()

    def advance(self, engine: _Breakers) -> list[BreakerEvent]:
        base = engine.breaker_time  # also an advance landed before a restart
        if not self.wait_s or base is None:
            return []
        now = self.clock()
        if now - self.judged_at < self.wait_s:
            return []
        events = engine.advance_breakers(base + timedelta(seconds=now - self.advanced_at))
        self.advanced_at = now
        return events
