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

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Generic, Literal, TypeVar, get_args

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
    "period_bounds",
    "to_us",
]

US = 1_000_000
MINUTE_US = 60 * US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

Size = Literal["minute", "hour", "day", "month"]
_SIZES: tuple[Size, ...] = get_args(Size)
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


def period_bounds(ts: datetime, size: str) -> tuple[datetime, datetime]:
    """The UTC window of ``size`` (minute, hour, day, month) holding ``ts`` (timezone-aware):
    ``[start, end)``. ``WindowRule``'s calendar, for code that keeps datetimes (the lease
    ledger, whose periods come back from its snapshots as plain strings)."""
    if size not in _SIZES:
        raise ValueError(f"unknown window size {size!r}; expected one of {', '.join(_SIZES)}")
    rule = WindowRule(size, 0)
    start = rule.start(to_us(ts))
    return from_us(start), from_us(rule.end(start))


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

    def accepted(self, starts_us: I64, watermarks_us: I64) -> npt.NDArray[np.bool_]:
        return self.ends(starts_us) + self.grace_us >= watermarks_us

    def expired(self, start_us: int, watermark_us: int) -> bool:
        return self.end(start_us) + self.grace_us + self.history_us < watermark_us


class Windowed(Generic[V]):
    """Per (window start, key), one value: the state of a windowed rule.

    One flat dict, so that a batch reads and writes its groups in bulk. ``expire`` drops
    what is past retention; it scans only once the oldest window has been past it for a
    quarter of the retention span, which bounds the state without a scan per batch (no
    rule ever reads a window past its retention, so when the scan runs changes nothing)."""

    __slots__ = ("_oldest", "_slack", "rule", "values")

    def __init__(self, rule: WindowRule) -> None:
        self.rule = rule
        self.values: dict[tuple[int, str], V] = {}
        self._oldest: int | None = None  # no window starts before this
        span = rule.grace_us + rule.history_us
        self._slack = max(span // 4, _FIXED.get(rule.size, DAY_US))

    def get(self, start_us: int, key: str) -> V | None:
        return self.values.get((start_us, key))

    def put(self, start_us: int, key: str, value: V) -> None:
        self.values[(start_us, key)] = value
        if self._oldest is None or start_us < self._oldest:
            self._oldest = start_us

    def cell(self, start_us: int, key: str, factory: Callable[[], V]) -> V:
        """The value of (start, key), created by ``factory`` if there is none."""
        value = self.values.get((start_us, key))
        if value is None:
            value = factory()
            self.put(start_us, key, value)
        return value

    def before(self, start_us: int, key: str, windows: int) -> list[V]:
        """The values of ``key`` in the ``windows`` fixed-size windows before ``start_us``."""
        step = _FIXED[self.rule.size]
        values = self.values
        found = (values.get((s, key)) for s in range(start_us - windows * step, start_us, step))
        return [v for v in found if v is not None]

    def get_many(self, keys: list[tuple[int, str]], default: V) -> Iterator[V]:
        return map(self.values.get, keys, repeat(default, len(keys)))  # type: ignore[arg-type]

    def put_many(self, keys: list[tuple[int, str]], values: Iterable[V]) -> None:
        self.values.update(zip(keys, values, strict=True))
        if keys:
            oldest = min(k[0] for k in keys)
            if self._oldest is None or oldest < self._oldest:
                self._oldest = oldest

    def expire(self, watermark_us: int, collect: bool = False) -> list[tuple[int, str, V]]:
        """Drop windows past their retention (see the class docstring); with ``collect``,
        return them."""
        oldest = self._oldest
        if oldest is None or not self.rule.expired(oldest + self._slack, watermark_us):
            return []
        step = _FIXED.get(self.rule.size)
        if step is not None:
            # expired(s) <=> s + step + grace + history < watermark: one comparison per key.
            cutoff = watermark_us - step - self.rule.grace_us - self.rule.history_us
            gone = [(s, k, v) for (s, k), v in self.values.items() if s < cutoff] if collect else []
            self.values = {sk: v for sk, v in self.values.items() if sk[0] >= cutoff}
        else:
            dead = {s for s, _ in self.values if self.rule.expired(s, watermark_us)}
            gone = [(s, k, v) for (s, k), v in self.values.items() if s in dead] if collect else []
            self.values = {sk: v for sk, v in self.values.items() if sk[0] not in dead}
        self._oldest = min((s for s, _ in self.values), default=None)
        return gone

    def items(self) -> list[tuple[int, str, V]]:
        return [(s, k, v) for (s, k), v in sorted(self.values.items(), key=lambda kv: kv[0])]
