"""``cache_hit_drop``: a feature's cache-read share of input tokens falls well below its own level.

Share = cache_read_tokens / input_tokens. The current UTC hour (once it has seen
``[detection] cache_min_input_tokens`` input tokens) is compared with the feature's share
over the previous 24 hours (which needs as many tokens and a share of at least
``cache_min_baseline_share``): it fires when the hour's share falls ``cache_drop_points``
or more below it (exactly that much fires) — a workload that hit 90% now hitting 70% or
less. Once per feature and hour; features without a cache habit are never judged. Hours
take calls by the grace rule of ``stream.windows``.

Columnar (``stream.partials``): per (feature, hour) token sums and the lowest running
share a batch saw. Merging an hour whose rows come after every earlier hour's knows its
baseline exactly; only if the hour's share could fall to the bar (the lowest running share
bounds every running share of the merged rows from below) are its rows read one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from spendstream.config import Config
from spendstream.stream.columns import FactColumns, Pos
from spendstream.stream.detectors.base import CACHE, Finding, make_alert
from spendstream.stream.grouping import Groups, combine
from spendstream.stream.partials import (
    Details,
    Partial,
    Source,
    by_group,
    by_window,
    spans,
    window_sorted,
)
from spendstream.stream.windows import HOUR_US, US, Windowed, WindowRule, from_us

__all__ = ["CacheDetector", "CacheWire"]

_PLACES = Decimal("0.0001")
_ZERO = Decimal(0)
# Token counts past this are summed by Python ints, call by call (int64 could overflow).
_BIG_TOKENS = 2**40
# Snapshot: [[hour start us, feature, input tokens, cache-read tokens, fired], ...]
CacheWire = list[list[int | str | bool]]
I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class TokenHour:
    input_tokens: int = 0
    read_tokens: int = 0
    fired: bool = False


class CacheDetector:
    name = "cache"

    def __init__(self, config: Config, replay_all: bool = False) -> None:
        d = config.detection
        self.drop = d.cache_drop_points
        self.min_base_share = d.cache_min_baseline_share
        self.min_tokens = d.cache_min_input_tokens
        self.rule = WindowRule("hour", d.allowed_lateness_s * US, 24 * HOUR_US)
        self.replay_all = replay_all
        self.hours: Windowed[TokenHour] = Windowed(self.rule)

    def _selected(self, cols: FactColumns) -> tuple[npt.NDArray[np.bool_], I64]:
        hours = self.rule.starts(cols.ts_us)
        codes, _ = cols.scope_codes("feature")
        mask = (
            (codes.index >= 0)
            & (cols.ints("input_tokens") != 0)
            & self.rule.accepted(hours, cols.wm_us)
        )
        return mask, hours

    def _rows(self, cols: FactColumns, scope: str, hour: int | None) -> I64:
        mask, hours = self._selected(cols)
        codes, names = cols.scope_codes("feature")
        mask &= codes.index == (names.index(scope) if scope in names else -1)
        if hour is not None:
            mask &= hours == hour
        return np.flatnonzero(mask)

    def summarize(self, cols: FactColumns, source: Source) -> list[Partial]:
        mask, hours = self._selected(cols)
        sel = np.flatnonzero(mask)
        if not len(sel):
            return []
        codes, names = cols.scope_codes("feature")
        tokens_in = cols.ints("input_tokens")
        tokens_read = cols.ints("cache_read_tokens")
        per_feature = Groups.of(codes.index[sel], sel)
        h = hours[per_feature.rows]
        back = np.zeros(len(h), dtype=np.bool_)
        back[1:] = h[1:] < h[:-1]
        back[per_feature.starts] = False
        flag = per_feature.any(back)
        big = bool(tokens_in[sel].max() >= _BIG_TOKENS)
        replay = dict(
            zip(per_feature.keys.tolist(), (flag | big | self.replay_all).tolist(), strict=True)
        )
        g = Groups.of(combine(codes.index[sel], hours[sel] // HOUR_US), sel)
        firsts, lasts, min_ts = spans(cols, g)
        ins = tokens_in[g.rows]
        reads = tokens_read[g.rows]
        run_in = g.cumsum(ins).astype(np.float64)
        run_read = g.cumsum(reads).astype(np.float64)
        low = g.minimum(run_read / run_in).tolist()
        in_sums, read_sums = g.total(ins).tolist(), g.total(reads).tolist()
        heads = g.rows[g.starts]
        out = []
        for k, (code, hour, n) in enumerate(
            zip(codes.index[heads].tolist(), hours[heads].tolist(), g.sizes.tolist(), strict=True)
        ):
            out.append(
                Partial(
                    "cache",
                    names[code],
                    0,
                    hour,
                    hour + HOUR_US,
                    n,
                    _ZERO,
                    in_sums[k],
                    read_sums[k],
                    low[k],
                    min_ts[k],
                    firsts[k],
                    lasts[k],
                    replay[code],
                    source,
                )
            )
        return out

    def merge(self, partials: Sequence[Partial], details: Details, out: list[Finding]) -> None:
        for (_, scope), ps in by_group(partials).items():
            if any(p.replay for p in ps) or not window_sorted(ps):
                for pos, cols, row, _ in details.rows(
                    ps, lambda c, s=scope: self._rows(c, s, None)
                ):
                    self._judge(scope, pos, cols, row, out)
                continue
            for start, hp in by_window(ps):
                cell = self.hours.cell(start, scope, TokenHour)
                if self._may_drop(scope, start, cell, hp):
                    rows = details.rows(hp, lambda c, s=scope, h=start: self._rows(c, s, h))
                    for pos, cols, row, _ in rows:
                        self._judge(scope, pos, cols, row, out)
                else:
                    cell.input_tokens += sum(p.input_tokens for p in hp)
                    cell.read_tokens += sum(p.cache_read_tokens for p in hp)

    def _may_drop(self, scope: str, start: int, cell: TokenHour, hp: list[Partial]) -> bool:
        if cell.fired or cell.input_tokens + sum(p.input_tokens for p in hp) < self.min_tokens:
            return False
        base_in, base_read = self._baseline(scope, start)
        if base_in < self.min_tokens:
            return False
        base_share = Decimal(base_read) / Decimal(base_in)
        if base_share < self.min_base_share:
            return False
        # Every running share of the merged rows is at least the lowest of the parts'
        # (a mediant), so above the bar with a margin it cannot fall to it.
        low = min(p.low_share for p in hp)
        if cell.input_tokens:
            low = min(low, cell.read_tokens / cell.input_tokens)
        return not low > float(base_share - self.drop) + 1e-9

    def _baseline(self, scope: str, hour: int) -> tuple[int, int]:
        """(input, cache-read) tokens of the feature over the 24 hours before ``hour``."""
        past = self.hours.before(hour, scope, 24)
        return sum(c.input_tokens for c in past), sum(c.read_tokens for c in past)

    def _judge(self, scope: str, pos: Pos, cols: FactColumns, row: int, out: list[Finding]) -> None:
        """One call of the feature: the rule itself."""
        hour = self.rule.start(int(cols.ts_us[row]))
        cell = self.hours.cell(hour, scope, TokenHour)
        cell.input_tokens += int(cols.ints("input_tokens")[row])
        cell.read_tokens += int(cols.ints("cache_read_tokens")[row])
        if cell.input_tokens < self.min_tokens or cell.fired:
            return
        base_in, base_read = self._baseline(scope, hour)
        if base_in < self.min_tokens:
            return
        base_share = Decimal(base_read) / Decimal(base_in)
        share = Decimal(cell.read_tokens) / Decimal(cell.input_tokens)
        if base_share < self.min_base_share or share > base_share - self.drop:
            return
        cell.fired = True
        start = from_us(hour)
        alert = make_alert(
            "cache_hit_drop",
            scope,
            "warning",
            cols.ts_at(row),
            share.quantize(_PLACES),
            (base_share - self.drop).quantize(_PLACES),
            f"{scope} read {share:.0%} of its input tokens from the prompt cache in the hour "
            f"from {start:%Y-%m-%d %H:00} UTC, against {base_share:.0%} over the previous 24 h",
            (start.isoformat(),),
            {
                "window_start": start.isoformat(),
                "baseline_share": str(base_share.quantize(_PLACES)),
            },
        )
        out.append(Finding(pos, CACHE, 0, alert))

    def expire(self, watermark_us: int) -> None:
        self.hours.expire(watermark_us)

    def snapshot(self) -> CacheWire:
        return [[h, f, c.input_tokens, c.read_tokens, c.fired] for h, f, c in self.hours.items()]

    def restore(self, data: CacheWire) -> None:
        for h, f, tin, tread, fired in data:
            self.hours.put(int(h), str(f), TokenHour(int(tin), int(tread), bool(fired)))
