"""spendstream.money at its bounds: what money_error refuses and held_amount holds, on both
sides of zero (a lease's or an alert's amount may be negative: a refund, a difference)."""

from __future__ import annotations

from decimal import Decimal, getcontext, localcontext

import pytest

from spendstream.money import MONEY_CONTEXT, exact_money, held_amount, is_usd, money_error

_LARGEST = Decimal("99999999999999999999.999999999999999999")


@pytest.mark.parametrize(
    ("amount", "problem"),
    [
        ("Infinity", "Infinity is not an amount of money"),
        ("-Infinity", "-Infinity is not an amount of money"),
        ("NaN", "NaN is not an amount of money"),
        ("1E+20", "1E+20 is not below 1e20 USD (what DECIMAL(38,18) holds)"),
        ("-1E+20", "-1E+20 is not below 1e20 USD (what DECIMAL(38,18) holds)"),
        ("9e999999", "9E+999999 is not below 1e20 USD (what DECIMAL(38,18) holds)"),
        (str(_LARGEST), None),
        (str(_LARGEST.copy_negate()), None),
        ("-0.000000000000000001", None),
    ],
)
def test_money_error_names_what_decimal_38_18_cannot_hold(amount: str, problem: str) -> None:
    assert money_error(Decimal(amount)) == problem


@pytest.mark.parametrize(
    ("amount", "usd"),
    [
        ("0", True),  # a call that cost nothing, a lease that needs nothing
        ("-0.000000000000000001", False),
        (str(_LARGEST), True),  # the most DECIMAL(38,18) holds
        ("1E+20", False),  # the first amount it cannot hold
        ("Infinity", False),
    ],
)
def test_is_usd_takes_zero_up_to_the_largest_decimal_38_18_amount(amount: str, usd: bool) -> None:
    # The lease client and protocol check every amount with it: zero must pass (a release of
    # a lease that used nothing says 0), 1e20 must not (no DECIMAL(38,18) column holds it).
    assert is_usd(Decimal(amount)) is usd


@pytest.mark.parametrize(
    ("amount", "held"),
    [
        ("1.000000000000000001", "1.000000000000000001"),  # 18 places: kept as it is
        ("-2.0000000000000000005", "-2.000000000000000000"),  # 19: half-even
        ("-2.0000000000000000015", "-2.000000000000000002"),
        ("-1E+20", str(_LARGEST.copy_negate())),  # past the range below zero: its smallest
        ("-5E+25", str(_LARGEST.copy_negate())),
        (str(_LARGEST.copy_negate()), str(_LARGEST.copy_negate())),
        ("1E+20", str(_LARGEST)),
    ],
)
def test_held_amount_is_the_nearest_amount_decimal_38_18_holds(amount: str, held: str) -> None:
    got = held_amount(Decimal(amount))
    assert got == Decimal(held)
    assert str(got) == held


def test_exact_money_sums_past_28_digits_whatever_the_caller_s_context() -> None:
    @exact_money
    def total(*amounts: Decimal) -> Decimal:
        return sum(amounts, Decimal(0))

    costs = [Decimal("10000000000.000000000000000001")] * 3
    with localcontext() as ctx:
        ctx.prec = 28
        assert total(*costs) == Decimal("30000000000.000000000000000003")
        assert getcontext().prec == 28  # the caller's context is its own again
    assert MONEY_CONTEXT.prec >= 40
