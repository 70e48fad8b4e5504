"""spendstream.wording: amounts and counts as alert messages, summaries and the report show
them, at the edges of each form (sub-cent, below a millionth, past 28 digits)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from spendstream.wording import plural, usd


@pytest.mark.parametrize(
    ("amount", "written"),
    [
        ("0.01", "$0.01"),  # a cent is cents, not three significant digits ($0.0100)
        ("-0.01", "-$0.01"),
        ("0.000001", "$0.000001"),  # a millionth is still fixed point
        ("0.0000009999", "$1.00E-6"),  # below it: E form, its exponent without a leading 0
        ("0.00000046789", "$4.68E-7"),
        ("0.00123456", "$0.00123"),  # three significant digits, not four
        ("-0.00123456", "-$0.00123"),
        ("0.005", "$0.005"),
        ("0", "$0.00"),
        ("-0", "$0.00"),
        ("-1234.5", "-$1,234.50"),
        # Past 1e26, cents need more than the default context's 28 digits.
        ("1E+27", "$1,000,000,000,000,000,000,000,000,000.00"),
        # 31 digits, just above a half cent: abs() would round it to 28 first (to the tie,
        # then half-even down to .12).
        ("-123456789012.1250000000000000001", "-$123,456,789,012.13"),
    ],
)
def test_usd_reads_each_amount_as_money(amount: str, written: str) -> None:
    assert usd(Decimal(amount)) == written


def test_usd_of_nothing_and_a_zero_at_whole_dollars() -> None:
    assert usd(None) == "$0"
    # A negative amount that rounds to zero dollars has no sign.
    assert usd(Decimal("-0.4"), places=0) == "$0"
    assert usd(Decimal("-0.6"), places=0) == "-$1"


@pytest.mark.parametrize(
    ("n", "written"), [(0, "0 calls"), (1, "1 call"), (2, "2 calls"), (1234, "1,234 calls")]
)
def test_plural(n: int, written: str) -> None:
    assert plural(n, "call") == written
