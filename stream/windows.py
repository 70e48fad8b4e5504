"""Event time in the detectors, and the one rule for windowed state.

Times are integer microseconds since the epoch, UTC, and every window start is the time
*floored* to its window (towards the past, also before 1970): a minute, an hour, a UTC day
or a UTC calendar month. One rule says which fact a window still takes and when its state
goes:

* **grace**: a window ``[start, end)`` takes a fact while ``end + grace >= watermark``,
  ``grace`` being ``[detection] allowed_lateness_s`` and the watermark the newest event
  time seen, this fact included. An older fact still lands; it moves no window.
* **retention**: a window's state is kept while ``end + grace + history >= watermark``,
  where ``history`` is how far back a rule reads (24 h for the baselines of the anomaly,
  retry-share and cache rules, 0 for the rest). Past it no fact the window takes can read
  it, so dropping it never changes a result: expiry may run at any time.

Keyed state that is not windowed (sessions, requests) is forgotten by ``idle``: its last
event time is older than ``watermark - span``. The detectors check it when a key is next
used, so results never depend on when a sweep ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "DAY_US",
    "HOUR_US",
    "MINUTE_US",
    "US",
    "WindowRule",
    "Windowed",
    "from_us",
    "idle",
    "to_us",
]

US = 1_000_000
MINUTE_US = 60 * US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

Size = Literal["minute", "hour", "day", "month"]
_FIXED: dict[str, int] = {"minute": MINUTE_US, "hour": HOUR_US, "day": DAY_US}
I64 = npt.NDArray[np.int64]
V = TypeVar("V")


def to_us(ts: datetime) -> int:
    """Exact microseconds since the epoch (``ts`` must be timezone-aware)."""
    return (ts - _EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def idle(last_us: int, watermark_us: int, span_us: int) -> bool:
    """Keyed state whose last event time is more than ``span_us`` behind the watermark."""
    return last_us < watermark_us - span_us


@dataclass(frozen=True, slots=True)
class WindowRule:
    """Windows of one size, with the grace and history of the module docstring."""

    size: Size
    grace_us: int
    history_us: int = 0

    def start(self, ts_us: int) -> int:
        step = _FIXED.get(self.size)
        if step is not None:
            return ts_us - ts_us % step
        month = np.datetime64(ts_us, "us").astype("datetime64[M]")
        return int(month.astype("datetime64[us]").astype(np.int64))

    def end(self, start_us: int) -> int:
        step = _FIXED.get(self.size)
        if step is not None:
            return start_us + step
        month = np.datetime64(start_us, "us").astype("datetime64[M]") + 1
        return int(month.astype("datetime64[us]").astype(np.int64))

    def starts(self, ts_us: I64) -> I64:
        step = _FIXED.get(self.size)
        if step is not None:
            return ts_us - ts_us % step
        months = ts_us.astype("datetime64[us]").astype("datetime64[M]")
        return months.astype("datetime64[us]").astype(np.int64)

    def ends(self, starts_us: I64) -> I64:
        step = _FIXED.get(self.size)
        if step is not None:
            return starts_us + step
        months = starts_us.astype("datetime64[us]").astype("datetime64[M]") + 1
        return months.astype("datetime64[us]").astype(np.int64)

    def accepts(self, start_us: int, watermark_us: int) -> bool:
        return self.end(start_us) + self.grace_us >= watermark_us

    def accepted(self, starts_us: I64, watermarks_us: I64) -> npt.NDArray[np.bool_]:
        return self.ends(starts_us) + self.grace_us >= watermarks_us

    def expired(self, start_us: int, watermark_us: int) -> bool:
        return self.end(start_us) + self.grace_us + self.history_us < watermark_us


@dataclass(slots=True)
class Windowed(Generic[V]):
    """Per window start, per key, one value: the state of a windowed rule.

    Kept by window so that expiry costs one step per window, not per key."""

    rule: WindowRule
    windows: dict[int, dict[str, V]] = field(default_factory=dict)

    def get(self, start_us: int, key: str) -> V | None:
        w = self.windows.get(start_us)
        return None if w is None else w.get(key)

    def window(self, start_us: int) -> dict[str, V]:
        w = self.windows.get(start_us)
        if w is None:
            w = self.windows[start_us] = {}
        return w

    def expire(self, watermark_us: int) -> list[tuple[int, dict[str, V]]]:
        """Drop the windows past their retention; return them (oldest first)."""
        gone = [s for s in self.windows if self.rule.expired(s, watermark_us)]
        gone.sort()
        return [(s, self.windows.pop(s)) for s in gone]

    def items(self) -> Iterator[tuple[int, str, V]]:
        for start in sorted(self.windows):
            for key, value in self.windows[start].items():
                yield start, key, value
