"""Log filters for lines a failing connection repeats (librdkafka's reconnects, a Meter's
retries against an endpoint that is down)."""

from __future__ import annotations

import logging
import re
import time

__all__ = ["OncePer", "RepeatFilter"]


class OncePer:
    """Whether a line of one sender is due again: at most once per ``every_s`` per key.

    Held by the sender (a Meter's transport), not by a logger: two senders in a process
    (two Meters, or tests one after another) each say their own first line."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._last: dict[object, float] = {}

    def due(self, key: object) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -self.every_s) < self.every_s:
            return False
        if len(self._last) > 1000:  # keys made of messages: keep it bounded
            self._last.clear()
        self._last[key] = now
        return True


class RepeatFilter(logging.Filter):
    """Pass one record per minute per line (numbers ignored: "5 events kept" and "6 events
    kept" are one line), so a service's log is not flooded by a retry loop."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self._once = OncePer(every_s)

    def filter(self, record: logging.LogRecord) -> bool:
        return self._once.due(re.sub(r"\d+", "#", record.getMessage()))
