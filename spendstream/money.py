"""The bound every amount of money the pipeline takes in stays below.

A budget, a rate, a lease's grant or use: each is below what the warehouse's money type,
``DECIMAL(38,18)``, holds (20 integer digits). A finite but enormous amount such as
``9e999999`` is a valid ``Decimal``, and the first sum it enters overflows the decimal
context: in a lease server that sum runs at every start (the changelog restores it), so one
such record stopped it for good. A usage event's own ``reported_cost_usd`` has a tighter
bound (``MAX_REPORTED_COST_USD``, docs/bounds.md).
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["MAX_MONEY_USD", "is_usd", "money_error"]

MAX_MONEY_USD = Decimal(10) ** 20


def is_usd(amount: Decimal) -> bool:
    """Whether ``amount`` is one a caller may spend or be granted: finite, >= 0, below 1e20."""
    return amount.is_finite() and 0 <= amount < MAX_MONEY_USD


def money_error(amount: Decimal) -> str | None:
    """Why ``amount`` is not an amount the pipeline keeps, or None if it is."""
    if not amount.is_finite():
        return f"{amount} is not an amount of money"
    if abs(amount) >= MAX_MONEY_USD:
        return f"{amount} is not below 1e20 USD (what DECIMAL(38,18) holds)"
    return None
