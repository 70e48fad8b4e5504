"""Pure pieces of the report page: bands and the SVG charts' arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from spendstream.warehouse.charts import hbars, nice_ceiling, usd
from spendstream.warehouse.report_page import band_for


@pytest.mark.parametrize(
    ("ratio", "band"),
    [
        (None, "no revenue"),
        (Decimal("0"), "good"),
        (Decimal("0.1999"), "good"),
        (Decimal("0.2"), "acceptable"),
        (Decimal("0.5"), "acceptable"),  # as the unit_economics view: <= 50% is acceptable
        (Decimal("0.5001"), "concerning"),
        (Decimal("3"), "concerning"),
    ],
)
def test_bands_match_the_unit_economics_view(ratio: Decimal | None, band: str) -> None:
    assert band_for(ratio)[0] == band


@pytest.mark.parametrize(
    ("value", "top"),
    [("0.0007", "0.001"), ("1", "1"), ("1.2", "2"), ("2.2", "2.5"), ("31", "50"), ("501", "1E+3")],
)
def test_axis_maximum_is_the_next_round_number(value: str, top: str) -> None:
    assert nice_ceiling(Decimal(value)) == Decimal(top)


def test_money_labels_are_rounded_for_display_but_never_hide_a_small_amount() -> None:
    assert usd(Decimal("1234.5678")) == "$1,234.57"
    assert usd(Decimal("0.004684761")) == "$0.004684761"
    assert usd(Decimal("-3")) == "-$3.00"


def test_bars_scale_to_the_largest_value_in_exact_decimal() -> None:
    svg = hbars(
        "c", [("a", Decimal("2"), "#000", "2"), ("b", Decimal("1"), "#000", "1")], label="x"
    )
    widths = [float(w.split('"')[0]) for w in svg.split('width="')[2:]]
    assert widths[0] == 2 * widths[1]
