"""A log line that a hot path may hit at every call without flooding the app's log.

``RateLimitedLog`` stands for one kind of line (one message, one logger, one level). The
first occurrence is logged at once; later ones are counted, not logged, until ``every_s``
(60 s) have passed since the last line logged; the first occurrence after that is logged
with how many were left out meanwhile, so the log holds at most one line per ``every_s``
and still says how often it happened::

    from spendstream.producers.rate_limited_log import RateLimitedLog

    _DROPPED = RateLimitedLog(log, logging.WARNING)  # module level: one per kind of line

    _DROPPED.log("usage event dropped (%s)", reason)
    # usage event dropped (queue full)
    # ... 60 s later, at the next occurrence:
    # usage event dropped (queue full) [41 more like it in the last 60 s not logged]

``log()`` takes a %-format message and its arguments as ``Logger.log`` does (formatted only
when the line is logged) and returns whether it logged. A burst that ends leaves its count
untold until the next occurrence: call ``flush()`` (at close, say) to log it now, as one
line, with the last of them as it would have read (``[3 more like 'usage event dropped
(queue full)' in the last 12 s not logged]``). ``RateLimitedLogs`` keeps one such line per
key (``logs[provider].log(...)``), so one thing's flood does not hide another's first line.

Time is ``clock()``, ``time.monotonic`` unless given: tests pass their own (no sleeps).
Thread-safe; the line is logged outside the lock. Counts are per process: a forked child
starts each line afresh (its first occurrence logged), with a lock of its own (one another
thread of the parent held at the fork would be held in the child for ever). Imports
nothing but the standard library.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

__all__ = ["RateLimitedLog", "RateLimitedLogs"]


class RateLimitedLog:
    """One kind of log line, logged at most once per ``every_s`` with a count of the rest."""

    __slots__ = (
        "__weakref__",
        "_args",
        "_last",
        "_lock",
        "_message",
        "_suppressed",
        "clock",
        "every_s",
        "level",
        "logger",
    )

    def __init__(
        self,
        logger: logging.Logger,
        level: int = logging.WARNING,
        *,
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, not {every_s}")
        self.logger = logger
        self.level = level
        self.every_s = every_s
        self.clock = clock
        self._lock = threading.Lock()
        self._start()
        _LINES.add(self)

    def _start(self) -> None:
        self._last: float | None = None  # when the last line was logged
        self._suppressed = 0  # occurrences since, not logged
        self._message = ""  # the last one's message and arguments, for flush()
        self._args: tuple[object, ...] = ()

    @property
    def suppressed(self) -> int:
        """Occurrences not logged since the last line."""
        with self._lock:
            return self._suppressed

    def log(self, msg: str, *args: object) -> bool:
        """One occurrence: logged (True) if it is the first, or the first ``every_s`` after
        the last line logged, with how many were not logged since; else counted (False)."""
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last < self.every_s:
                self._suppressed += 1
                self._message, self._args = msg, args  # formatted only if flush() says it
                return False
            left_out = self._suppressed
            since = now - self._last if self._last is not None else 0.0
            self._last, self._suppressed = now, 0
        if not self.logger.isEnabledFor(self.level):
            return True
        if left_out:
            self.logger.log(
                self.level,
                "%s [%d more like it in the last %.0f s not logged]",
                _formatted(msg, args),
                left_out,
                since,
                stacklevel=2,
            )
        else:
            self.logger.log(self.level, msg, *args, stacklevel=2)
        return True

    def flush(self) -> bool:
        """Log the count of occurrences not logged since the last line, if any, now (a
        closing component's last word); True if it logged. The next occurrence is then
        logged as a first one."""
        with self._lock:
            left_out, message, args = self._suppressed, self._message, self._args
            since = self.clock() - self._last if self._last is not None else 0.0
            self._suppressed, self._last = 0, None
        if not left_out:
            return False
        self.logger.log(
            self.level,
            "[%d more like %r in the last %.0f s not logged]",
            left_out,
            _formatted(message, args),
            since,
            stacklevel=2,
        )
        return True


class RateLimitedLogs:
    """A ``RateLimitedLog`` per key, made at the key's first line: one kind of line said of
    several things (a provider, say), each counted and logged on its own, so one that
    occurs at every call does not hold another's first line back for a minute.

    ``logs[key].log(msg, *args)``; ``flush()`` flushes every key's. The keys should be few
    (each keeps its line for the life of the process)."""

    __slots__ = ("_lines", "clock", "every_s", "level", "logger")

    def __init__(
        self,
        logger: logging.Logger,
        level: int = logging.WARNING,
        *,
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, not {every_s}")
        self.logger, self.level, self.every_s, self.clock = logger, level, every_s, clock
        self._lines: dict[str, RateLimitedLog] = {}

    def __getitem__(self, key: str) -> RateLimitedLog:
        line = self._lines.get(key)
        if line is None:
            # No lock (one held at a fork would be held in the child for ever): two threads
            # may each make one, and setdefault keeps the first for both.
            made = RateLimitedLog(self.logger, self.level, every_s=self.every_s, clock=self.clock)
            line = self._lines.setdefault(key, made)
        return line

    def flush(self) -> bool:
        """``flush()`` of every key's line; True if any logged."""
        return any([line.flush() for line in list(self._lines.values())])


_LINES: weakref.WeakSet[RateLimitedLog] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for line in list(_LINES):
        line._lock = threading.Lock()
        line._start()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _formatted(msg: str, args: tuple[object, ...]) -> str:
    if not args:
        return msg
    try:
        return msg % args
    except (TypeError, ValueError):  # a bad format: say it all rather than raise in a hot path
        return f"{msg} {args!r}"
