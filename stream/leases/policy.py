"""What a budget lease may be: the hard caps behind a scope, and the fair-share grant size.

A hard cap is ``hard_limit x amount_usd`` of a ``[[budget]]`` with ``hard_limit`` set, per
scope and UTC period kind (two budgets on the same scope and period: the lower cap holds).

Fair share (docs/budget-leases.md, "Fairness"): with ``free`` the amount no lease holds and
nothing has spent, and ``k`` other clients holding an active lease on the scope, a request
for ``need`` (the call's worst case) up to ``want`` gets

    grant = min(want, max(free / (k + 2), min_grant_usd), max_grant_usd)
    then at least max(need, min_grant_usd) and at most free

So a lone client takes at most half of what is left, each holder shrinks the next share,
and grants shrink geometrically as the budget nears its cap: the last dollars are spread
in small leases (that idle clients return) instead of stranded in one large one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

from spendstream.config import BudgetConfig, Config

__all__ = ["GRANT_QUANTUM", "HardCap", "LeasePolicy", "grant_size", "hard_caps"]

# Grants are rounded down to a nano-dollar: shares divide, and 28-digit quotients help no one.
GRANT_QUANTUM = Decimal("1e-9")


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    """The service's lease settings (``[leases]``); ``retain_s`` is how long after its period
    ends a period's account still takes late landings (``[detection] allowed_lateness_s``)."""

    ttl_s: float = 30.0
    grace_s: float = 30.0
    min_grant_usd: Decimal = Decimal("0.01")
    max_grant_usd: Decimal | None = None
    retain_s: float = 3600.0

    @classmethod
    def from_config(cls, config: Config) -> LeasePolicy:
        lc = config.leases
        return cls(
            ttl_s=lc.ttl_s,
            grace_s=lc.grace_s,
            min_grant_usd=lc.min_grant_usd,
            max_grant_usd=lc.max_grant_usd,
            retain_s=float(config.detection.allowed_lateness_s),
        )


@dataclass(frozen=True, slots=True)
class HardCap:
    """The most a scope may spend in one UTC ``period`` (``month``, ``day`` or ``hour``)."""

    scope: str
    period: str
    limit_usd: Decimal
    budget: str  # how messages name it, e.g. "team:search/day"


def hard_caps(budgets: Sequence[BudgetConfig]) -> dict[str, tuple[HardCap, ...]]:
    """Scope -> its hard caps, one per period kind (the lowest of equal-period budgets)."""
    lowest: dict[tuple[str, str], Decimal] = {}
    for b in budgets:
        if b.hard_limit is None:
            continue
        limit = b.hard_limit * b.amount_usd
        key = (b.scope, b.period)
        if key not in lowest or limit < lowest[key]:
            lowest[key] = limit
    out: dict[str, list[HardCap]] = {}
    for (scope, period), limit in sorted(lowest.items()):
        out.setdefault(scope, []).append(HardCap(scope, period, limit, f"{scope}/{period}"))
    return {scope: tuple(caps) for scope, caps in out.items()}


def grant_size(
    policy: LeasePolicy, free: Decimal, need: Decimal, want: Decimal, other_holders: int
) -> Decimal:
    """The fair-share grant for a request the budget can cover (``need <= free``)."""
    share = max(free / (other_holders + 2), policy.min_grant_usd)
    grant = min(max(want, need), share)
    if policy.max_grant_usd is not None:
        grant = min(grant, policy.max_grant_usd)
    if grant.as_tuple().exponent < GRANT_QUANTUM.as_tuple().exponent:  # type: ignore[operator]
        grant = grant.quantize(GRANT_QUANTUM, rounding=ROUND_DOWN)
    return min(max(grant, need, policy.min_grant_usd), free)
