"""``hourly_anomaly``: an hour whose spend passes ``factor`` x its scope's recent hourly mean.

The contract's rule (``method = "plain"``, the default): for a scope, the spend so far in
a UTC clock hour exceeds ``factor`` times the mean hourly spend of the 24 hours before
that hour (empty hours count as zero). It fires at the crossing event, once per scope
and hour; the message quotes the spend *so far* at that event. A scope is not judged
before its first event is at least 24 h before the hour judged (exactly, to the
microsecond), nor while those 24 hours spent less than ``min_baseline_usd`` (spending
exactly that much is enough). Unpriced facts count zero; a fact costing zero never fires.

``method = "seasonal"`` compares with the mean of the same clock hour on the previous
``seasonal_days`` days instead (and needs that many days of history), for strongly
diurnal traffic that the plain rule would flag every morning. ``min_baseline_usd`` still
applies to the previous 24 hours.

Hours take facts by the grace rule of ``stream.windows``; a scope all of whose hours have
passed their retention (grace + history) is forgotten, and warms up again.

Columnar, in two steps (``stream.partials``): a batch is summarized per (scope, hour) with
exact sums; merging an hour whose rows come after every earlier hour's compares the
hour's final spend with its threshold (both exact), so only an hour that crosses is read
row by row, to find the crossing fact. A scope whose rows jump back to an earlier hour, may
be forgotten inside the batch, or sums past 1e9 USD, is judged fact by fact.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from spendstream.config import Config
from spendstream.scopes import GLOBAL
from spendstream.sorting import stable_order
from spendstream.stream.columns import FactColumns, Pos
from spendstream.stream.detectors.base import ANOMALY, Finding, make_alert
from spendstream.stream.detectors.sessions import EXACT_BOUND_USD, shift
from spendstream.stream.grouping import Groups
from spendstream.stream.partials import (
    Details,
    Partial,
    Source,
    by_window,
    spans,
    window_sorted,
)
from spendstream.stream.windows import DAY_US, HOUR_US, US, Windowed, WindowRule, from_us
from spendstream.wording import usd

__all__ = ["AnomalyDetector", "AnomalyWire"]

_PLACES = Decimal("0.000001")
_ZERO = Decimal(0)
_NONE = np.iinfo(np.int64).min
# Snapshot: {"hours": [[start_us, scope, spend, fired]], "scopes": [[scope, first_us, last_hour_us]]}
AnomalyWire = dict[str, list[list[int | str | bool]]]
I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class HourSpend:
    spend: Decimal = _ZERO
    fired: bool = False


@dataclass(slots=True)
class ScopeSince:
    first_us: int  # the scope's first event (any fact the rule took, priced or not)
    last_hour: int  # start of the newest hour it has a fact in


class AnomalyDetector:
    name = "anomaly"

    def __init__(
        self, config: Config, kinds: Collection[str] | None = None, replay_all: bool = False
    ) -> None:
        an = config.anomaly
        self.factor = an.factor
        self.min_baseline_usd = an.min_baseline_usd
        self.seasonal = an.method == "seasonal"
        self.days = an.seasonal_days
        # A kind listed twice is judged once; its place is its first mention.
        listed = list(dict.fromkeys(an.scopes))
        self.kinds = [(i, k) for i, k in enumerate(listed) if kinds is None or k in kinds]
        self.history_us = self.days * DAY_US if self.seasonal else DAY_US
        grace = config.detection.allowed_lateness_s * US
        self.rule = WindowRule("hour", grace, self.history_us)
        self.replay_all = replay_all
        self.hours: Windowed[HourSpend] = Windowed(self.rule)
        self.scopes: dict[str, ScopeSince] = {}

    # --- step 1: a batch -> partials ------------------------------------------------------

    def summarize(self, cols: FactColumns, source: Source) -> list[Partial]:
        hours = self.rule.starts(cols.ts_us)
        taken = self.rule.accepted(hours, cols.wm_us)
        out: list[Partial] = []
        for variant, kind in self.kinds:
            codes, names = cols.scope_codes(kind)
            sel = np.flatnonzero((codes.index >= 0) & taken)
            if not len(sel):
                continue
            # One stable sort by scope: each scope's rows in arrival order; where their hours
            # never go back, each (scope, hour) is one run of them.
            rows = sel if kind == GLOBAL else sel[stable_order(codes.index[sel])]
            code, hour = codes.index[rows], hours[rows]
            new_scope = np.empty(len(rows), dtype=np.bool_)
            new_scope[0] = True
            np.not_equal(code[1:], code[:-1], out=new_scope[1:])
            new_run = new_scope.copy()
            new_run[1:] |= hour[1:] != hour[:-1]
            per_scope = Groups.runs(rows, new_scope, code)
            replay = self._needs_replay(cols, per_scope, hour)
            g = Groups.runs(rows, new_run)
            firsts, lasts, min_ts = spans(cols, g)
            sums = cols.cost_sums(g)
            heads = rows[g.starts]
            for i, (c, h, n) in enumerate(
                zip(
                    codes.index[heads].tolist(),
                    hours[heads].tolist(),
                    g.sizes.tolist(),
                    strict=True,
                )
            ):
                out.append(
                    Partial(
                        "anomaly",
                        names[c],
                        variant,
                        h,
                        h + HOUR_US,
                        n,
                        sums[i],
                        0,
                        0,
                        0.0,
                        min_ts[i],
                        firsts[i],
                        lasts[i],
                        replay[c],
                        source,
                    )
                )
        return out

    def _needs_replay(self, cols: FactColumns, g: Groups, h: I64) -> dict[int, bool]:
        """Per scope code: rows that jump back to an earlier hour, a possible forget after
        the first row, or money too large for bulk sums."""
        back = np.zeros(len(h), dtype=np.bool_)
        back[1:] = h[1:] < h[:-1]
        back[g.starts] = False
        prev = shift(g, g.cummax(h), _NONE)
        gone = (prev != _NONE) & (
            np.where(prev == _NONE, 0, prev) + HOUR_US + self.rule.grace_us + self.history_us
            < cols.wm_us[g.rows]
        )
        flag = g.any(back | gone)
        flag |= g.total_f(cols.cost_f[g.rows]) >= EXACT_BOUND_USD
        flag |= self.replay_all
        return dict(zip(g.keys.tolist(), flag.tolist(), strict=True))

    # --- step 2: partials -> state and findings ---------------------------------------------

    def merge(self, partials: Sequence[Partial], details: Details, out: list[Finding]) -> None:
        # A partial names its kind by its place in the writer's [anomaly] scopes, and a scope
        # owner restarted on another list merges again what its last commit had not landed,
        # written on the list before: the kind is the scope's own (team:a is team's), judged
        # at this owner's place for it, or not at all when its list no longer has it.
        place: dict[str, int] = {kind: variant for variant, kind in self.kinds}
        groups: dict[tuple[int, str], list[Partial]] = {}
        for p in partials:
            variant = place.get(GLOBAL if p.scope == GLOBAL else p.scope.partition(":")[0])
            if variant is not None:
                groups.setdefault((variant, p.scope), []).append(p)
        for (variant, scope), ps in groups.items():
            if not self._merge_scope(variant, scope, ps, details, out):
                self._replay_scope(variant, scope, ps, details, out)

    def _merge_scope(
        self, variant: int, scope: str, ps: list[Partial], details: Details, out: list[Finding]
    ) -> bool:
        """Merge window by window; False when only a replay can judge the scope."""
        if any(p.replay for p in ps) or not window_sorted(ps):
            return False
        windows = by_window(ps)
        for start, hp in windows:
            cell = self.hours.get(start, scope)
            carried = 0.0 if cell is None else float(cell.spend)
            if carried + sum(p.spend_f for p in hp) >= EXACT_BOUND_USD:
                return False
        first = min(p.first for p in ps)
        info = self.scopes.get(scope)
        if info is not None and self.rule.expired(info.last_hour, first[0]):
            del self.scopes[scope]
            info = None
        if self.rule.expired(windows[0][0], max(p.last[0] for p in ps)):
            return False  # the scope could be forgotten after its first row here
        for start, hp in windows:
            cell = self.hours.cell(start, scope, HourSpend)
            added = _ZERO
            for p in hp:
                added += p.spend
            crossing = None
            if not cell.fired and info is not None and info.first_us <= start - self.history_us:
                last24, mean = self._baseline(scope, start)
                threshold = self.factor * mean
                if last24 >= self.min_baseline_usd and cell.spend + added > threshold:
                    crossing = (mean, threshold)
            if crossing is None:
                cell.spend += added
            else:
                self._replay_window(variant, scope, start, hp, cell, *crossing, details, out)
            first_ts = min(p.first_ts for p in hp)
            if info is None:
                info = self.scopes[scope] = ScopeSince(first_ts, start)
            else:
                info.first_us = min(info.first_us, first_ts)
                info.last_hour = max(info.last_hour, start)
        return True

    def _replay_window(
        self,
        variant: int,
        scope: str,
        start: int,
        hp: list[Partial],
        cell: HourSpend,
        mean: Decimal,
        threshold: Decimal,
        details: Details,
        out: list[Finding],
    ) -> None:
        """An hour that crosses: find its crossing fact (history and baseline hold for all
        its rows, which come after every earlier hour's and before every later one's)."""
        kind = self.kinds_by_variant[variant]
        sources = details.sources(hp)
        if len(sources) == 1:
            cols = sources[0]
            rows = self._rows(cols, kind, scope, start)
            hit = cols.crossing(rows, cell.spend, threshold, strict=True)
            if hit is not None:
                k, spend = hit
                if cell.spend > threshold:  # over already: the first fact that costs fires
                    nonzero = np.flatnonzero(cols.cost_f[rows] != 0)
                    k = int(nonzero[0]) if len(nonzero) else -1
                    spend = cell.spend + cols.cost_sum(rows[: k + 1])
                if k >= 0:
                    cell.fired = True
                    row = int(rows[k])
                    out.append(
                        self._finding(
                            variant, scope, cols.pos(row), cols, row, start, spend, threshold, mean
                        )
                    )
            cell.spend += cols.cost_sum(rows)
            return
        for pos, cols, row, cost in details.rows(hp, lambda c: self._rows(c, kind, scope, start)):
            cell.spend += cost or _ZERO
            if not cell.fired and cost and cell.spend > threshold:
                cell.fired = True
                out.append(
                    self._finding(
                        variant, scope, pos, cols, row, start, cell.spend, threshold, mean
                    )
                )

    def _replay_scope(
        self, variant: int, scope: str, ps: list[Partial], details: Details, out: list[Finding]
    ) -> None:
        """The scope judged one fact at a time: the rule itself."""
        kind = self.kinds_by_variant[variant]
        # An hour's baseline sums earlier hours only: kept until a row adds to an hour
        # before it (rows come in position order, so mostly never), not summed per row.
        baselines: dict[int, tuple[Decimal, Decimal]] = {}
        for pos, cols, row, priced in details.rows(ps, lambda c: self._rows(c, kind, scope, None)):
            ts = int(cols.ts_us[row])
            hour = self.rule.start(ts)
            info = self.scopes.get(scope)
            if info is not None and self.rule.expired(info.last_hour, pos[0]):
                info = None
            if info is None:
                info = self.scopes[scope] = ScopeSince(ts, hour)
            info.first_us = min(info.first_us, ts)
            info.last_hour = max(info.last_hour, hour)
            cell = self.hours.cell(hour, scope, HourSpend)
            cost = priced or _ZERO
            cell.spend += cost
            if cost and any(h > hour for h in baselines):
                baselines = {h: b for h, b in baselines.items() if h <= hour}
            if cell.fired or info.first_us > hour - self.history_us or cost == 0:
                continue
            got = baselines.get(hour)
            if got is None:
                got = baselines[hour] = self._baseline(scope, hour)
            last24, mean = got
            if last24 < self.min_baseline_usd:
                continue
            threshold = self.factor * mean
            if cell.spend > threshold:
                cell.fired = True
                out.append(
                    self._finding(variant, scope, pos, cols, row, hour, cell.spend, threshold, mean)
                )

    @property
    def kinds_by_variant(self) -> dict[int, str]:
        return dict(self.kinds)

    def _rows(self, cols: FactColumns, kind: str, scope: str, hour: int | None) -> I64:
        codes, names = cols.scope_codes(kind)
        try:
            code = names.index(scope)
        except ValueError:
            return np.zeros(0, dtype=np.int64)
        hours = self.rule.starts(cols.ts_us)
        mask = (codes.index == code) & self.rule.accepted(hours, cols.wm_us)
        if hour is not None:
            mask &= hours == hour
        return np.flatnonzero(mask)

    def _baseline(self, scope: str, hour: int) -> tuple[Decimal, Decimal]:
        """(previous 24 h spend, the mean the hour is compared with), summed in a fixed order."""
        last24 = sum((self._spend(scope, hour - i * HOUR_US) for i in range(1, 25)), _ZERO)
        if self.seasonal:
            same = (self._spend(scope, hour - d * DAY_US) for d in range(1, self.days + 1))
            return last24, sum(same, _ZERO) / self.days
        return last24, last24 / 24

    def _spend(self, scope: str, hour: int) -> Decimal:
        cell = self.hours.get(hour, scope)
        return _ZERO if cell is None else cell.spend

    def _finding(
        self,
        variant: int,
        scope: str,
        pos: Pos,
        cols: FactColumns,
        row: int,
        hour: int,
        spend: Decimal,
        threshold: Decimal,
        mean: Decimal,
    ) -> Finding:
        start = from_us(hour)
        if not self.seasonal:
            basis = "the previous 24 h mean hourly spend"
        elif self.days > 1:
            basis = f"the same hour's mean over the previous {self.days} days"
        else:  # seasonal_days = 1
            basis = "the same hour the previous day"
        alert = make_alert(
            "hourly_anomaly",
            scope,
            "warning",
            cols.ts_at(row),
            spend,
            threshold.quantize(_PLACES),
            f"{scope} spent {usd(spend)} so far in the hour from "
            f"{start:%Y-%m-%d %H:00} UTC, over {self.factor} x {basis} "
            f"({usd(mean)})",
            (start.isoformat(),),
            {
                "window_start": start.isoformat(),
                "baseline_mean_usd": str(mean.quantize(_PLACES)),
                "method": "seasonal" if self.seasonal else "plain",
            },
        )
        return Finding(pos, ANOMALY, variant, alert)

    # --- state -----------------------------------------------------------------------------

    def expire(self, watermark_us: int) -> None:
        for start, scope, _ in self.hours.expire(watermark_us, collect=True):
            info = self.scopes.get(scope)
            if info is not None and info.last_hour <= start:
                del self.scopes[scope]

    def snapshot(self) -> AnomalyWire:
        return {
            "hours": [[h, s, str(c.spend), c.fired] for h, s, c in self.hours.items()],
            "scopes": [[s, i.first_us, i.last_hour] for s, i in sorted(self.scopes.items())],
        }

    def restore(self, data: AnomalyWire) -> None:
        for h, s, spend, fired in data["hours"]:
            self.hours.put(int(h), str(s), HourSpend(Decimal(str(spend)), bool(fired)))
        for s, first, last in data["scopes"]:
            self.scopes[str(s)] = ScopeSince(int(first), int(last))
