"""Repricing stored facts after a catalog update or a changed override (pure; no I/O).

``reprice(facts, pricer)`` prices the facts' events again and reports old against new
totals, overall and per (provider, model), before anything is written. Prices stay
time-effective: each event is priced with the rates in force at its own ``ts``, so a
price change dated after an event leaves it alone; ``at=`` prices every event as of one
instant instead (``spendstream prices reprice --at-current-prices``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Context, Decimal, localcontext

from spendstream.records import Cost, Fact
from spendstream.stream.pricing import Pricer

__all__ = ["RepriceLine", "RepriceReport", "reprice"]

_CTX = Context(prec=80)


@dataclass(slots=True)
class RepriceLine:
    """Old against new for one (provider, model)."""

    provider: str
    model: str
    calls: int = 0
    changed: int = 0
    old_cost_usd: Decimal = Decimal(0)
    new_cost_usd: Decimal = Decimal(0)
    old_unpriced: int = 0
    new_unpriced: int = 0
    new_sources: set[str] = field(default_factory=set)

    @property
    def difference_usd(self) -> Decimal:
        with localcontext(_CTX):
            return self.new_cost_usd - self.old_cost_usd


@dataclass(slots=True)
class RepriceReport:
    """What repricing would change; ``facts`` are the repriced facts, in input order."""

    facts: list[Fact]
    lines: list[RepriceLine]
    changed: int

    @property
    def old_cost_usd(self) -> Decimal:
        with localcontext(_CTX):
            return sum((ln.old_cost_usd for ln in self.lines), Decimal(0))

    @property
    def new_cost_usd(self) -> Decimal:
        with localcontext(_CTX):
            return sum((ln.new_cost_usd for ln in self.lines), Decimal(0))

    @property
    def difference_usd(self) -> Decimal:
        with localcontext(_CTX):
            return self.new_cost_usd - self.old_cost_usd

    def changed_facts(self, old: Sequence[Fact]) -> list[Fact]:
        """The repriced facts whose cost or price source differs from ``old`` (same order)."""
        return [n for o, n in zip(old, self.facts, strict=True) if _differs(o.cost, n.cost)]


def _differs(old: Cost | None, new: Cost | None) -> bool:
    if old is None or new is None:
        return (old is None) != (new is None)
    return (
        old.input_cost_usd != new.input_cost_usd
        or old.cache_read_cost_usd != new.cache_read_cost_usd
        or old.cache_write_cost_usd != new.cache_write_cost_usd
        or old.output_cost_usd != new.output_cost_usd
        or old.cost_usd != new.cost_usd
        or old.price_source != new.price_source
    )


def reprice(facts: Sequence[Fact], pricer: Pricer, *, at: datetime | None = None) -> RepriceReport:
    """Price ``facts`` again with ``pricer``; old vs new per (provider, model) and overall.

    Lines are ordered by the size of the change, largest first, then provider and model.
    """
    costs = pricer.price_batch([f.event for f in facts], at=at)
    lines: dict[tuple[str, str], RepriceLine] = {}
    new_facts = []
    changed = 0
    with localcontext(_CTX):
        for f, cost in zip(facts, costs, strict=True):
            ev = f.event
            line = lines.get((ev.provider, ev.model))
            if line is None:
                line = lines[(ev.provider, ev.model)] = RepriceLine(ev.provider, ev.model)
            line.calls += 1
            if f.cost is None:
                line.old_unpriced += 1
            else:
                line.old_cost_usd += f.cost.cost_usd
            if cost is None:
                line.new_unpriced += 1
            else:
                line.new_cost_usd += cost.cost_usd
                line.new_sources.add(cost.price_source)
            if _differs(f.cost, cost):
                line.changed += 1
                changed += 1
            new_facts.append(Fact(event=ev, cost=cost, ingested_at=f.ingested_at))
    ordered = sorted(
        lines.values(), key=lambda ln: (-abs(ln.difference_usd), ln.provider, ln.model)
    )
    return RepriceReport(new_facts, ordered, changed)
