"""``retry_storm``: retries silently multiply the bill.

Two forms, both ``retry_storm``:

* one ``request_id`` over ``[runaway] max_attempts`` attempts (its highest ``attempt``, or
  the number of calls carrying it if larger). Fires once per request; the scope is the
  crossing call's api key, else its session, else ``global``. A request whose last call is
  more than ``max(allowed_lateness_s, 3600)`` s behind the watermark is forgotten when its
  next call arrives (sweep-independent, as in ``sessions``; the per-event engine forgot it
  at an hourly sweep).
* an api key whose error/retry share (calls with ``status != "ok"`` or ``attempt > 1``) in
  a UTC hour, over at least ``[detection] retry_min_calls`` calls, reaches
  ``retry_min_share`` (equal fires) and is more than ``retry_share_factor`` times its share
  over the previous 24 hours (equal does not fire; those 24 hours must hold
  ``retry_min_calls`` calls too). Once per key and hour; an hour before the last one that
  fired for the key is not judged again. The hour takes calls by the one grace rule of
  ``stream.windows`` (the per-event engine took calls up to 24 h late here, unlike every
  other rule, while part of their baseline was already gone).

Columnar: requests grouped by id with running attempt maximum and call count (exact
integers); a request forgotten inside a batch is judged call by call. For the share form,
the hour's running counts pick candidate rows (float bar, generous); a key with any
candidate is judged call by call with exact Decimals, every other key just adds its counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from spendstream.config import Config
from spendstream.records import Alert
from spendstream.scopes import GLOBAL
from spendstream.stream.columns import FactColumns
from spendstream.stream.detectors.base import RETRIES, Finding, make_alert
from spendstream.stream.detectors.request_table import RequestState, RequestTable
from spendstream.stream.detectors.sessions import shift
from spendstream.stream.grouping import Groups, combine
from spendstream.stream.windows import HOUR_US, US, Windowed, WindowRule, from_us

__all__ = ["RequestState", "RetryDetector", "RetryWire"]

_SHARE_PLACES = Decimal("0.0001")
_NONE = np.iinfo(np.int64).min
# Snapshot: {"requests": RequestTable.wire(), "hours": [[start_us, key, calls, bad]],
# "fired": [[key, hour_us]]}
RetryWire = dict[str, Any]


@dataclass(slots=True)
class HourCounts:
    calls: int = 0
    bad: int = 0


class RetryDetector:
    name = "retries"

    def __init__(self, config: Config, replay_all: bool = False) -> None:
        self.max_attempts = config.runaway.max_attempts
        det = config.detection
        self.forget_s = max(det.allowed_lateness_s, 3600)
        self.share_factor = det.retry_share_factor
        self.min_share = det.retry_min_share
        self.min_calls = det.retry_min_calls
        self.rule = WindowRule("hour", det.allowed_lateness_s * US, 24 * HOUR_US)
        self.replay_all = replay_all
        self.requests = RequestTable()
        self.hours: Windowed[HourCounts] = Windowed(self.rule)
        self.fired_hours: dict[str, int] = {}  # api key -> start (us) of the last hour it fired
        self._swept_at: int | None = None  # derived

    def detect(self, cols: FactColumns, out: list[Finding]) -> None:
        self._requests(cols, out)
        self._shares(cols, out)

    # --- attempts of one request -------------------------------------------------------

    def _requests(self, cols: FactColumns, out: list[Finding]) -> None:
        codes = cols.codes("request_id")
        sel = np.flatnonzero(codes.index >= 0)
        if not len(sel):
            return
        g = Groups.of(codes.index[sel], sel)
        rows = g.rows
        # Every code of a dictionary encoding occurs, so group g is code g.
        ids = codes.values if len(g) == len(codes.values) else [codes.values[c] for c in g.keys]
        table = self.requests
        slots = table.find(ids)
        known = slots >= 0
        n = len(g)
        att0 = np.zeros(n, dtype=np.int64)
        calls0 = np.zeros(n, dtype=np.int64)
        last0 = np.full(n, _NONE, dtype=np.int64)
        fired0 = np.zeros(n, dtype=np.bool_)
        at = slots[known]
        att0[known], calls0[known] = table.attempts[at], table.calls[at]
        last0[known], fired0[known] = table.last[at], table.fired[at]
        ts_s = cols.ts_us[rows] // US
        wm_s = cols.wm_us[rows] // US
        before = np.maximum(last0[g.group], shift(g, g.cummax(ts_s), _NONE))
        restart = (before == _NONE) | (before < wm_s - self.forget_s)
        inner = g.any(restart & (g.rank() > 0))
        fresh = restart[g.starts]
        att0[fresh], calls0[fresh], fired0[fresh] = 0, 0, False
        attempt = cols.ints("attempt", 1)[rows]
        attempts = np.maximum(
            np.maximum(att0[g.group], g.cummax(attempt)), calls0[g.group] + g.rank() + 1
        )
        cross = g.first_where((attempts > self.max_attempts) & ~fired0[g.group])
        slow = inner | self.replay_all
        for i in np.flatnonzero((cross >= 0) & ~slow).tolist():
            p = int(cross[i])
            out.append(self._attempts_alert(ids[i], int(attempts[p]), int(rows[p]), cols))
        att = np.maximum(att0, g.maximum(attempt))
        calls = calls0 + g.sizes
        last = np.maximum(np.where(fresh, _NONE, last0), g.maximum(ts_s))
        fired = fired0 | (cross >= 0)
        quick = np.flatnonzero(~slow)
        table.write(
            [ids[i] for i in quick.tolist()] if len(quick) < n else ids,
            slots[quick],
            att[quick],
            calls[quick],
            last[quick],
            fired[quick],
        )
        replayed = np.flatnonzero(slow)
        if not len(replayed):
            return
        # Written together (one append to the columns, not one per request).
        states = [
            self._replay_request(ids[i], rows[g.starts[i] : g.ends[i]].tolist(), cols, out)
            for i in replayed.tolist()
        ]
        att_r, calls_r, last_r, fired_r = zip(*states, strict=True)
        table.write(
            [ids[i] for i in replayed.tolist()],
            slots[replayed],
            np.array(att_r, dtype=np.int64),
            np.array(calls_r, dtype=np.int64),
            np.array(last_r, dtype=np.int64),
            np.array(fired_r, dtype=np.bool_),
        )

    def _replay_request(
        self, rid: str, rows: list[int], cols: FactColumns, out: list[Finding]
    ) -> RequestState:
        """The request's calls in the batch judged one by one; its state after them."""
        st = self.requests.get(rid)
        attempts = cols.ints("attempt", 1)
        for row in rows:
            ts_s = int(cols.ts_us[row]) // US
            if st is not None and st[2] < int(cols.wm_us[row]) // US - self.forget_s:
                st = None
            att, calls, last, fired = st if st is not None else (0, 0, ts_s, False)
            att, calls, last = max(att, int(attempts[row])), calls + 1, max(last, ts_s)
            made = max(att, calls)
            if made > self.max_attempts and not fired:
                fired = True
                out.append(self._attempts_alert(rid, made, row, cols))
            st = (att, calls, last, fired)
        assert st is not None  # a group has a call
        return st

    def _attempts_alert(self, rid: str, attempts: int, row: int, cols: FactColumns) -> Finding:
        # The call's api key, else its session, else global.
        scope = GLOBAL
        for kind in ("session", "api_key"):
            codes, names = cols.scope_codes(kind)
            if codes.index[row] >= 0:
                scope = names[codes.index[row]]
        alert = make_alert(
            "retry_storm",
            scope,
            "warning",
            cols.ts_at(row),
            Decimal(attempts),
            Decimal(self.max_attempts),
            f"request {rid} on {scope} made {attempts} attempts (limit {self.max_attempts})",
            ("request", rid),
            {"request_id": rid, "form": "attempts"},
        )
        return Finding(cols.pos(row), RETRIES, 0, alert)

    # --- a key's error/retry share -------------------------------------------------------

    def _shares(self, cols: FactColumns, out: list[Finding]) -> None:
        keys, _ = cols.scope_codes("api_key")
        hours = self.rule.starts(cols.ts_us)
        sel = np.flatnonzero((keys.index >= 0) & self.rule.accepted(hours, cols.wm_us))
        if not len(sel):
            return
        bad = (cols.codes("status").index != cols.codes("status").code_of("ok")) | (
            cols.ints("attempt", 1) > 1
        )
        g = Groups.of(combine(keys.index[sel], hours[sel] // HOUR_US), sel)
        heads = g.rows[g.starts]
        head_keys = [keys.values[c] for c in keys.index[heads].tolist()]
        head_hours = hours[heads].tolist()
        base = [self.hours.get(h, k) for k, h in zip(head_keys, head_hours, strict=True)]
        calls0 = np.array([0 if b is None else b.calls for b in base], dtype=np.int64)
        bad0 = np.array([0 if b is None else b.bad for b in base], dtype=np.int64)
        fired0 = np.array([self.fired_hours.get(k, _NONE) for k in head_keys], dtype=np.int64)
        b = bad[g.rows].astype(np.int64)
        calls = calls0[g.group] + g.rank() + 1
        bads = bad0[g.group] + g.cumsum(b)
        maybe = (
            (calls >= self.min_calls)
            & (bads >= float(self.min_share) * calls * (1 - 1e-9) - 1e-9)
            & (hours[g.rows] > fired0[g.group])
        )
        hot: set[str] = set()
        if self.replay_all:
            hot.update(head_keys)
        else:
            np_hot = g.any(maybe)
            hot.update(k for k, h in zip(head_keys, np_hot.tolist(), strict=True) if h)
        sizes = g.sizes.tolist()
        bad_sums = g.total(b).tolist()
        for i, (k, h) in enumerate(zip(head_keys, head_hours, strict=True)):
            if k in hot:
                continue
            cell = self.hours.cell(h, k, HourCounts)
            cell.calls += sizes[i]
            cell.bad += bad_sums[i]
        if hot:
            rows_of_key = keys.index[sel]
            for k in sorted(hot):
                rows = sel[rows_of_key == keys.code_of(k)].tolist()
                self._replay_share(k, rows, hours, bad, cols, out)

    def _replay_share(
        self,
        key: str,
        rows: list[int],
        hours: np.ndarray,
        bad: np.ndarray,
        cols: FactColumns,
        out: list[Finding],
    ) -> None:
        for row in rows:
            hour = int(hours[row])
            cell = self.hours.cell(hour, key, HourCounts)
            cell.calls += 1
            cell.bad += int(bad[row])
            if cell.calls < self.min_calls or self.fired_hours.get(key, _NONE) >= hour:
                continue
            if cell.bad < self.min_share * cell.calls:
                continue
            past = self.hours.before(hour, key, 24)
            base_calls, base_bad = sum(c.calls for c in past), sum(c.bad for c in past)
            if base_calls < self.min_calls:
                continue
            share = Decimal(cell.bad) / Decimal(cell.calls)
            base_share = Decimal(base_bad) / Decimal(base_calls)
            threshold = max(self.min_share, self.share_factor * base_share)
            if share < self.min_share or share <= self.share_factor * base_share:
                continue
            self.fired_hours[key] = hour
            out.append(self._share_alert(key, hour, share, base_share, threshold, row, cols))

    def _share_alert(
        self,
        key: str,
        hour: int,
        share: Decimal,
        base_share: Decimal,
        threshold: Decimal,
        row: int,
        cols: FactColumns,
    ) -> Finding:
        start = from_us(hour)
        scope = f"api_key:{key}"
        alert: Alert = make_alert(
            "retry_storm",
            scope,
            "warning",
            cols.ts_at(row),
            share.quantize(_SHARE_PLACES),
            threshold.quantize(_SHARE_PLACES),
            f"{scope}: {share:.0%} of calls failed or were retries in the hour from "
            f"{start:%Y-%m-%d %H:00} UTC, against {base_share:.0%} over the previous 24 h",
            ("share", start.isoformat()),
            {"form": "share", "window_start": start.isoformat()},
        )
        return Finding(cols.pos(row), RETRIES, 1, alert)

    # --- state -------------------------------------------------------------------------

    def expire(self, watermark_us: int) -> None:
        for start, key, _ in self.hours.expire(watermark_us, collect=True):
            if self.fired_hours.get(key, start + 1) <= start:
                del self.fired_hours[key]
        # Requests: the rule is checked at each call; this sweep only bounds the state.
        if self._swept_at is not None and watermark_us - self._swept_at < self.forget_s * US // 4:
            return
        self._swept_at = watermark_us
        cutoff = watermark_us // US - self.forget_s
        self.requests.keep_since(cutoff)

    def snapshot(self) -> RetryWire:
        return {
            "requests": self.requests.wire(),
            "hours": [[h, k, c.calls, c.bad] for h, k, c in self.hours.items()],
            "fired": [[k, h] for k, h in sorted(self.fired_hours.items())],
        }

    def restore(self, data: RetryWire) -> None:
        self.requests = RequestTable.from_wire(data["requests"])
        for h, k, calls, bad in data["hours"]:
            self.hours.put(int(h), str(k), HourCounts(int(calls), int(bad)))
        for k, h in data["fired"]:
            self.fired_hours[str(k)] = int(h)
