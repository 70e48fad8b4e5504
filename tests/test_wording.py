"""spendstream.wording: amounts and counts as alert messages, summaries and the report show
them, at the edges of each form (sub-cent, below a millionth, past 28 digits)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from spendstream.wording import clipped, exact_usd, plural, usd, usd_past, written_usd


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


@pytest.mark.parametrize(
    ("amount", "written"),
    [
        # abs() and normalize() round to 28 digits: 12345678901.12345678901234568 before.
        ("12345678901.123456789012345678", "$12345678901.123456789012345678"),
        ("-12345678901.100000000000000000", "-$12345678901.1"),
        ("0E-18", "$0"),  # a DECIMAL(38,18) sum of nothing, not "$0E-18"
        ("0.001735000000000000", "$0.001735"),  # the 18 places' zeros go, no digit does
        ("4.999999999999999999", "$4.999999999999999999"),
        ("1E+3", "$1000"),
    ],
)
def test_exact_usd_keeps_every_digit_and_drops_only_trailing_zeros(
    amount: str, written: str
) -> None:
    assert exact_usd(Decimal(amount)) == written


@pytest.mark.parametrize(
    ("amount", "written"),
    [
        ("40.0", "$40.00"),  # a budget as money is written, beside a spend's cents
        ("100", "$100.00"),
        ("1E+3", "$1,000.00"),
        ("1234567.5", "$1,234,567.50"),
        ("0.05", "$0.05"),
        ("0.025", "$0.025"),  # finer than a cent: its digits, not cents' $0.02
        ("0.005000", "$0.005"),
        ("0.000000000000000001", "$0.000000000000000001"),
    ],
)
def test_written_usd_is_cents_unless_the_amount_is_finer(amount: str, written: str) -> None:
    assert written_usd(Decimal(amount)) == written


def test_clipped_keeps_text_of_the_width_and_cuts_longer_to_the_width_with_dots() -> None:
    assert clipped("x" * 80, 80) == "x" * 80
    assert clipped("x" * 81, 80) == "x" * 77 + "..."
    assert len(clipped("y" * 10_000, 80)) == 80


@pytest.mark.parametrize(
    ("spend", "threshold", "written"),
    [
        ("0.0125", "0.01", "$0.0125"),  # cents read $0.01: not past a $0.01 budget
        ("0.012500000000000000", "0.01", "$0.0125"),  # DECIMAL(38,18)'s zeros go
        ("200.00", "200.0", "$200.00"),  # exactly the threshold: cents are the spend
        ("200.004", "200", "$200.004"),
        ("200.006", "200", "$200.01"),  # cents past the threshold read true
        ("0.04725", "0.05", "$0.04725"),  # cents off by 0.00275: over 1/1000 of $0.05
        ("50.004", "50", "$50.004"),  # cents read $50.00: not past $50
        ("50.006", "50", "$50.01"),  # off by 0.004, within 0.05
        ("50.006", "4", "$50.01"),  # off by exactly a thousandth of $4: cents
        ("50.006", "3.99", "$50.006"),  # ... by more than a thousandth of $3.99
        ("0.00025001", "0.00025", "$0.00025001"),  # sub-cent: usd's three digits not past it
        ("0.000253", "0.00025", "$0.000253"),  # ... and past it
        ("1234.5", "1000", "$1,234.50"),
    ],
)
def test_usd_past_reads_past_its_threshold(spend: str, threshold: str, written: str) -> None:
    assert usd_past(Decimal(spend), Decimal(threshold)) == written
