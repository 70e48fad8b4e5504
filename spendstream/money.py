"""The bound every amount of money the pipeline takes in stays below.

A budget, a rate, a lease's grant or use: each is below what the warehouse's money type,
``DECIMAL(38,18)``, holds (20 integer digits). A finite but enormous amount such as
``9e999999`` is a valid ``Decimal``, and the first sum it enters overflows the decimal
context: in a lease server that sum runs at every start (the changelog restores it), so one
such record stopped it for good. A usage event's own ``reported_cost_usd`` has a tighter
bound (``MAX_REPORTED_COST_USD``, docs/bounds.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Context, Decimal, localcontext
from typing import ParamSpec, TypeVar

__all__ = [
    "MAX_CALL_COST_USD",
    "MAX_MONEY_USD",
    "MONEY_CONTEXT",
    "at_money_scale",
    "exact_money",
    "held_amount",
    "is_usd",
    "money_error",
]

MAX_MONEY_USD = Decimal(10) ** 20
# Python's default context keeps 28 digits: an amount of $1e10 with 18 places has 29. Sums and
# products of amounts (spends, a budget times its level) are exact in this one.
MONEY_CONTEXT = Context(prec=80)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def exact_money(step: Callable[_P, _R]) -> Callable[_P, _R]:
    """``step`` run in MONEY_CONTEXT: for the pure cores (detection, the lease ledger) whose
    sums use ``+`` in whatever context the calling thread has."""

    @functools.wraps(step)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with localcontext(MONEY_CONTEXT):
            return step(*args, **kwargs)

    return run


# No LLM call costs a billion dollars (a bounded event at the dearest catalog rate costs about
# $1.2M): a cost this high is a wrong rate. Below it, a sum of costs reaches MAX_MONEY_USD only
# after 1e11 calls, so the warehouse's SUM(cost_usd) and detection's sums stay in DECIMAL(38,18).
MAX_CALL_COST_USD = Decimal(10) ** 9
# The largest amount DECIMAL(38,18) holds.
_CEILING = Decimal("99999999999999999999.999999999999999999")


def is_usd(amount: Decimal) -> bool:
    """Whether ``amount`` is one a caller may spend or be granted: finite, >= 0, below 1e20."""
    return amount.is_finite() and 0 <= amount < MAX_MONEY_USD


def money_error(amount: Decimal) -> str | None:
    """Why ``amount`` is not an amount the pipeline keeps, or None if it is."""
    if not amount.is_finite():
        return f"{amount} is not an amount of money"
    if not -MAX_MONEY_USD < amount < MAX_MONEY_USD:  # abs() would round to 28 digits
        return f"{amount} is not below 1e20 USD (what DECIMAL(38,18) holds)"
    return None


_PLACES = Decimal(1).scaleb(-18)


def at_money_scale(amount: Decimal) -> Decimal:
    """``amount`` rounded half-even to DECIMAL(38,18)'s 18 places, only if it has more; in the
    money context (at 28 digits, rounding $1e10 to 18 places raises)."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -18:
        return amount.quantize(_PLACES, context=MONEY_CONTEXT)
    return amount


def held_amount(amount: Decimal) -> Decimal:
    """``amount`` if DECIMAL(38,18) holds it, else the nearest amount it does hold: rounded
    (half-even) to 18 places, and past the type's range its largest.

    For a sum or product an alert carries (a threshold of amount x 1/3 has 80 digits in the
    money context): the record keeps a value the warehouse and the wire accept, and its writer
    keeps the exact amount alongside (alert details).
    """
    amount = at_money_scale(amount)
    if amount >= MAX_MONEY_USD:
        return _CEILING
    if amount <= -MAX_MONEY_USD:
        return _CEILING.copy_negate()  # exact: unary minus rounds to the caller's 28 digits
    return amount
