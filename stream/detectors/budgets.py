"""Budgets: ``budget_threshold`` at each alert level, ``budget_exceeded`` at the hard limit.

Each ``[[budget]]`` counts the priced spend of the facts in its scope over UTC calendar
periods (month, day or hour). A level is crossed when the period's spend *reaches*
``level x amount_usd``; each level alerts once per period, at the crossing event. At
``hard_limit x amount_usd`` (when set; reaching it is enough) ``budget_exceeded`` fires once
per period, and the breaker of the budget's scope opens until the next period begins.
Each ``[[budget]]`` entry keeps its own spend (two entries alike alert once: same dedup_key).

Severity: levels below 0.8 are ``info``, below 1.0 ``warning``, from 1.0 ``critical``;
``budget_exceeded`` is ``critical``. Periods take facts by the grace rule of
``stream.windows`` (its end plus the allowed lateness is not behind the watermark).

Columnar (``stream.partials``): spend only grows, so a period whose final spend stays
below its next unfired level cannot cross; only a period that crosses is read fact by fact.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from spendstream.config import BudgetConfig, Config
from spendstream.records import Severity
from spendstream.scopes import GLOBAL
from spendstream.stream.columns import FactColumns, Pos
from spendstream.stream.detectors.base import BUDGETS, Finding, make_alert
from spendstream.stream.detectors.sessions import EXACT_BOUND_USD
from spendstream.stream.grouping import Groups
from spendstream.stream.partials import Details, Partial, Source, by_window, spans
from spendstream.stream.windows import US, Windowed, WindowRule, from_us
from spendstream.wording import usd_past, written_usd

__all__ = ["BudgetDetector", "BudgetWire", "budget_id"]

_ZERO = Decimal(0)
HARD = "hard"


# Snapshot: [[budget key, period start us, spend, [fired tags]], ...]; the key is the
# budget's scope, period and amount (``_state_keys``); snapshots before it named the
# [[budget]] index, or its scope and period alone.
BudgetWire = list[list[int | str | list[str]]]
I64 = npt.NDArray[np.int64]


def budget_id(b: BudgetConfig) -> str:
    """Names a budget in alerts; stable while its scope, period and amount are."""
    return f"{b.scope}/{b.period}/{b.amount_usd}"


def _state_keys(budgets: Sequence[BudgetConfig]) -> list[str]:
    """What a snapshot names each ``[[budget]]`` by: its scope and period, which entry of
    that scope and period it is, and its amount (``team:a/day#0/100``). Not its index: a
    budget added ahead of others, or one removed, would hand each later budget its
    neighbour's spend. The amount tells two entries of one scope and period apart when they
    are moved (their spend is the same, what fired is not: a $100 budget would take the
    $10 one's fired hard limit and never open its breaker); restored by scope and period
    alone when no amount matches, so an amount raised mid-period keeps the period's state."""
    seen: dict[str, int] = {}
    keys = []
    for b in budgets:
        name = f"{b.scope}/{b.period}"
        keys.append(f"{name}#{seen.get(name, 0)}/{b.amount_usd}")
        seen[name] = seen.get(name, 0) + 1
    return keys


def _parse_key(key: str) -> tuple[str, int, Decimal | None]:
    """``(scope/period, entry, amount)`` of a state key; keys written without the amount
    (``team:a/day#0``) have none."""
    head, _, amount = key.rpartition("/")
    if "#" in amount:  # no amount: the last part is the period and entry
        head, amount = key, ""
    name, _, n = head.rpartition("#")
    return name, int(n), Decimal(amount) if amount else None


def _match_keys(saved: Iterable[str], budgets: Sequence[BudgetConfig]) -> dict[str, int]:
    """Which ``[[budget]]`` each saved key restores to: first the entries of one scope,
    period and amount, in their order; then the rest of each scope and period, the entry
    the key names if it is free, else the first free one."""
    by_name: dict[str, list[int]] = {}
    for i, b in enumerate(budgets):
        by_name.setdefault(f"{b.scope}/{b.period}", []).append(i)
    parsed = sorted(((_parse_key(k), k) for k in saved), key=lambda kv: kv[0][1])
    out: dict[str, int] = {}
    claimed: set[int] = set()
    for (name, _, amount), key in parsed:
        if amount is None:
            continue
        for i in by_name.get(name, ()):
            if i not in claimed and budgets[i].amount_usd == amount:
                out[key] = i
                claimed.add(i)
                break
    for (name, n, _), key in parsed:
        if key in out:
            continue
        free = [i for i in by_name.get(name, ()) if i not in claimed]
        if not free:
            continue
        named = by_name[name][n] if n < len(by_name[name]) else None
        i = named if named in free else free[0]
        out[key] = i
        claimed.add(i)
    return out


def _severity(level: Decimal) -> Severity:
    if level < Decimal("0.8"):
        return "info"
    if level < 1:
        return "warning"
    return "critical"


@dataclass(slots=True)
class BudgetPeriod:
    spend: Decimal = _ZERO
    fired: set[str] = field(default_factory=set)  # level tags, and "hard"


class BudgetDetector:
    name = "budgets"

    def __init__(
        self, config: Config, kinds: Collection[str] | None = None, replay_all: bool = False
    ) -> None:
        grace = config.detection.allowed_lateness_s * US
        self.budgets = [
            (i, b)
            for i, b in enumerate(config.budget)
            if kinds is None or b.scope.partition(":")[0] in kinds
        ]
        self.rules = {i: WindowRule(b.period, grace) for i, b in self.budgets}
        self.periods: dict[int, Windowed[BudgetPeriod]] = {
            i: Windowed(self.rules[i]) for i, _ in self.budgets
        }
        self.replay_all = replay_all
        self.keys = _state_keys(config.budget)
        self.config_budgets = list(config.budget)

    def _in_scope(self, cols: FactColumns, b: BudgetConfig) -> npt.NDArray[np.bool_]:
        kind, _, _ = b.scope.partition(":")
        codes, names = cols.scope_codes(kind)
        try:
            code = names.index(b.scope) if kind != GLOBAL else 0
        except ValueError:
            return np.zeros(cols.n, dtype=np.bool_)
        return codes.index == code

    def _rows(self, cols: FactColumns, i: int, b: BudgetConfig, start: int) -> I64:
        rule = self.rules[i]
        starts = rule.starts(cols.ts_us)
        mask = cols.priced & self._in_scope(cols, b) & rule.accepted(starts, cols.wm_us)
        return np.flatnonzero(mask & (starts == start))

    def summarize(self, cols: FactColumns, source: Source) -> list[Partial]:
        out: list[Partial] = []
        for i, b in self.budgets:
            rule = self.rules[i]
            starts = rule.starts(cols.ts_us)
            mask = cols.priced & self._in_scope(cols, b) & rule.accepted(starts, cols.wm_us)
            sel = np.flatnonzero(mask)
            if not len(sel):
                continue
            g = Groups.of(starts[sel], sel)
            firsts, lasts, min_ts = spans(cols, g)
            sums = cols.cost_sums(g)
            big = g.total_f(cols.cost_f[g.rows]) >= EXACT_BOUND_USD
            for k, (start, n) in enumerate(zip(g.keys.tolist(), g.sizes.tolist(), strict=True)):
                out.append(
                    Partial(
                        "budget",
                        b.scope,
                        i,
                        start,
                        rule.end(start),
                        n,
                        sums[k],
                        0,
                        0,
                        0.0,
                        min_ts[k],
                        firsts[k],
                        lasts[k],
                        bool(big[k]) or self.replay_all,
                        source,
                    )
                )
        return out

    def merge(self, partials: Sequence[Partial], details: Details, out: list[Finding]) -> None:
        budgets = dict(self.budgets)
        for i, ps in self._by_budget(partials).items():
            b = budgets[i]
            for start, pp in by_window(ps):
                per = self.periods[i].cell(start, budget_id(b), BudgetPeriod)
                added = _ZERO
                for p in pp:
                    added += p.spend
                bars = [level * b.amount_usd for level in b.alert_at if str(level) not in per.fired]
                if b.hard_limit is not None and HARD not in per.fired:
                    bars.append(b.hard_limit * b.amount_usd)
                replay = any(p.replay for p in pp) or (
                    float(per.spend) + sum(p.spend_f for p in pp) >= EXACT_BOUND_USD
                )
                if not replay and (not bars or per.spend + added < min(bars)):
                    per.spend += added
                    continue
                sources = details.sources(pp)
                if not replay and len(sources) == 1:
                    cols = sources[0]
                    self._crossings(i, b, start, per, cols, self._rows(cols, i, b, start), out)
                    per.spend += added
                    continue
                rows = details.rows(pp, lambda c, i=i, b=b, s=start: self._rows(c, i, b, s))
                for pos, cols, row, cost in rows:
                    assert cost is not None
                    per.spend += cost
                    self._judge(i, b, start, per, pos, cols, row, out)

    def _by_budget(self, partials: Sequence[Partial]) -> dict[int, list[Partial]]:
        """Each budget's partials, found by the budget's scope and period, not by the
        ``[[budget]]`` index a partial carries: a restarted scope owner merges again what its
        last commit had not landed, written by workers on the configuration before it (a
        budget added ahead of another, or removed, moves the indexes; a partial's index named
        another budget's scope, or none). Every budget of one scope and period has the same
        partial of a batch, so each budget takes one per (window, source batch)."""
        groups: dict[str, dict[tuple[int, int], dict[tuple[int, str], Partial]]] = {}
        for p in partials:
            group = groups.setdefault(p.scope, {}).setdefault((p.window_start, p.window_end), {})
            group.setdefault((p.source.partition, p.source.batch), p)
        out: dict[int, list[Partial]] = {}
        for i, b in self.budgets:
            rule = self.rules[i]
            for (start, end), ps in groups.get(b.scope, {}).items():
                if rule.end(start) == end:
                    out.setdefault(i, []).extend(ps.values())
        return out

    def _levels(self, b: BudgetConfig, per: BudgetPeriod) -> list[tuple[int, str, Decimal]]:
        """The unfired bars in the order one fact alerts them: levels, lowest first, then hard."""
        bars = [
            (rank, str(level), level * b.amount_usd)
            for rank, level in enumerate(sorted(b.alert_at))
            if str(level) not in per.fired
        ]
        if b.hard_limit is not None and HARD not in per.fired:
            bars.append((999, HARD, b.hard_limit * b.amount_usd))
        return bars

    def _crossings(
        self,
        i: int,
        b: BudgetConfig,
        start: int,
        per: BudgetPeriod,
        cols: FactColumns,
        rows: I64,
        out: list[Finding],
    ) -> None:
        """Each unfired bar's crossing fact, found on exact running sums (one source)."""
        hits = []
        for rank, tag, bar in self._levels(b, per):
            hit = cols.crossing(rows, per.spend, bar, strict=False)
            if hit is not None:
                hits.append((hit[0], rank, tag, hit[1]))
        for k, _rank, tag, spend in sorted(hits, key=lambda h: (h[0], h[1])):
            if tag in per.fired:  # two levels alike: the first one alerts
                continue
            per.fired.add(tag)
            row = int(rows[k])
            out.append(self._alert(i, b, start, tag, spend, cols.pos(row), cols, row))

    def _judge(
        self,
        i: int,
        b: BudgetConfig,
        start: int,
        per: BudgetPeriod,
        pos: Pos,
        cols: FactColumns,
        row: int,
        out: list[Finding],
    ) -> None:
        """One priced fact of the period, its cost already added: the rule itself."""
        for _, tag, bar in self._levels(b, per):
            if tag in per.fired or per.spend < bar:
                continue
            per.fired.add(tag)
            out.append(self._alert(i, b, start, tag, per.spend, pos, cols, row))

    def _alert(
        self,
        i: int,
        b: BudgetConfig,
        start: int,
        tag: str,
        spend: Decimal,
        pos: Pos,
        cols: FactColumns,
        row: int,
    ) -> Finding:
        bid = budget_id(b)
        begin, end = from_us(start), from_us(self.rules[i].end(start))
        key = begin.isoformat()
        details = {
            "budget": bid,
            "period": b.period,
            "period_start": key,
            "period_end": end.isoformat(),
            "amount_usd": str(b.amount_usd),
        }
        ts = cols.ts_at(row)
        if tag == HARD:
            assert b.hard_limit is not None
            alert = make_alert(
                "budget_exceeded",
                b.scope,
                "critical",
                ts,
                spend,
                b.hard_limit * b.amount_usd,
                f"{b.scope} spent {usd_past(spend, b.hard_limit * b.amount_usd)}, past the hard "
                f"limit of {b.hard_limit} x its {written_usd(b.amount_usd)} {b.period} budget",
                (b.period, str(b.amount_usd), key),
                {**details, "hard_limit": str(b.hard_limit)},
            )
            return Finding(pos, BUDGETS, i * 1000 + 999, alert)
        levels = sorted(b.alert_at)
        rank = [str(v) for v in levels].index(tag)
        level = levels[rank]
        alert = make_alert(
            "budget_threshold",
            b.scope,
            _severity(level),
            ts,
            spend,
            level * b.amount_usd,
            f"{b.scope} spent {usd_past(spend, level * b.amount_usd)} of its "
            f"{written_usd(b.amount_usd)} {b.period} budget ({level:%} level) in the period "
            f"from {begin:%Y-%m-%d %H:00} UTC",
            (b.period, str(b.amount_usd), key, tag),
            {**details, "level": tag},
        )
        return Finding(pos, BUDGETS, i * 1000 + rank, alert)

    def expire(self, watermark_us: int) -> None:
        for windowed in self.periods.values():
            windowed.expire(watermark_us)

    def snapshot(self) -> BudgetWire:
        return [
            [self.keys[i], start, str(per.spend), sorted(per.fired)]
            for i, windowed in sorted(self.periods.items())
            for start, _, per in windowed.items()
        ]

    def restore(self, data: BudgetWire) -> None:
        budgets = dict(self.budgets)
        index = _match_keys({k for k, *_ in data if isinstance(k, str)}, self.config_budgets)
        for key, start, spend, fired in data:
            # An older snapshot names the index (an int): restored by it, as it was written.
            i = index.get(key) if isinstance(key, str) else int(key)  # type: ignore[arg-type]
            b = budgets.get(i) if i is not None else None
            if i is None or b is None:
                continue
            period = BudgetPeriod(Decimal(str(spend)), set(fired))  # type: ignore[arg-type]
            self.periods[i].put(int(start), budget_id(b), period)  # type: ignore[arg-type]
