"""``runaway_rate``: calls per UTC minute of one api key, and of one session, over the limit.

Windows are tumbling event-time minutes, so every runtime cuts them alike. The call that
makes a window's count exceed ``[runaway] max_calls_per_minute`` (the ``limit + 1``-th)
fires, once per scope and minute. A late call counts toward its own minute while that
minute takes it (``stream.windows``: its end plus the allowed lateness is not behind the
watermark); a later one moves nothing.

Columnar: rows are grouped by (scope, minute); a window's count is its carried count plus
the row's rank in the group, so the crossing row is found by arithmetic, never by a loop
over rows.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import numpy as np

from spendstream.config import Config
from spendstream.records import Alert
from spendstream.stream.columns import FactColumns
from spendstream.stream.detectors.base import RATE, Finding, make_alert
from spendstream.stream.grouping import Groups, combine
from spendstream.stream.windows import MINUTE_US, US, Windowed, WindowRule, from_us
from spendstream.wording import plural

__all__ = ["RateDetector", "RateWire"]

KINDS = ("api_key", "session")
# Snapshot: [[window start us, scope, calls], ...]
RateWire = list[list[int | str]]


class RateDetector:
    name = "rate"

    def __init__(self, config: Config) -> None:
        self.limit = config.runaway.max_calls_per_minute
        self.rule = WindowRule("minute", config.detection.allowed_lateness_s * US)
        self.counts: Windowed[int] = Windowed(self.rule)

    def detect(self, cols: FactColumns, out: list[Finding]) -> None:
        starts = self.rule.starts(cols.ts_us)
        taken = self.rule.accepted(starts, cols.wm_us)
        limit = self.limit
        for order, kind in enumerate(KINDS):
            codes, names = cols.scope_codes(kind)
            sel = np.flatnonzero((codes.index >= 0) & taken)
            if not len(sel):
                continue
            groups = Groups.of(combine(codes.index[sel], starts[sel] // MINUTE_US), sel)
            heads = groups.rows[groups.starts]
            keys = list(
                zip(
                    starts[heads].tolist(),
                    [names[c] for c in codes.index[heads].tolist()],
                    strict=True,
                )
            )
            before = np.fromiter(self.counts.get_many(keys, 0), dtype=np.int64, count=len(keys))
            total = before + groups.sizes
            self.counts.put_many(keys, total.tolist())
            for g in np.flatnonzero((before <= limit) & (limit < total)).tolist():
                row = int(groups.rows[int(groups.starts[g]) + limit - int(before[g])])
                start, scope = keys[g]
                alert = self._alert(scope, start, cols.ts_at(row))
                out.append(Finding(cols.pos(row), RATE, order, alert))

    def _alert(self, scope: str, start_us: int, ts: datetime) -> Alert:
        start = from_us(start_us)
        return make_alert(
            "runaway_rate",
            scope,
            "critical",
            ts,
            Decimal(self.limit + 1),
            Decimal(self.limit),
            f"{scope} made more than {plural(self.limit, 'call')} in the minute from "
            f"{start:%Y-%m-%d %H:%M} UTC",
            (start.isoformat(),),
            {"window_start": start.isoformat(), "window_s": "60"},
        )

    def expire(self, watermark_us: int) -> None:
        self.counts.expire(watermark_us)

    def snapshot(self) -> RateWire:
        return [[start, scope, n] for start, scope, n in self.counts.items()]

    def restore(self, data: RateWire) -> None:
        for start, scope, n in data:
            self.counts.put(int(start), str(scope), int(n))
