"""Pure pieces of the report page: bands and the SVG charts' arithmetic."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from spendstream.warehouse.charts import hbars, nice_ceiling, plural, split_bars, usd
from spendstream.warehouse.report_page import band_for, cost_text


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


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("1234.5678", "$1,234.57"),
        ("0.01", "$0.01"),
        ("0.00896925", "$0.00897"),  # three significant digits, not $0.00 nor 8 decimals
        ("0.004684761", "$0.00468"),
        ("0.005", "$0.005"),
        ("0.0099999", "$0.01"),
        ("0.0000004684", "$4.68E-7"),
        ("0", "$0.00"),
        ("-0.001", "-$0.001"),
        ("-0.0001", "-$0.0001"),
        ("-3", "-$3.00"),
    ],
)
def test_money_labels_are_rounded_for_people_but_never_hide_a_small_amount(
    value: str, shown: str
) -> None:
    assert usd(Decimal(value)) == shown


def test_counts_are_singular_for_one() -> None:
    assert plural(1, "call") == "1 call"
    assert plural(0, "call") == "0 calls"
    assert plural(1234, "call") == "1,234 calls"


def test_unpriced_calls_say_so_rather_than_pass_for_zero_dollars() -> None:
    assert cost_text(None) == "unpriced"
    assert cost_text(Decimal(0), calls=2694, unpriced=2694) == "unpriced"
    assert cost_text(Decimal("14.85"), calls=10, unpriced=2) == "$14.85 + 2 unpriced calls"
    assert cost_text(Decimal("14.85"), calls=10, unpriced=1) == "$14.85 + 1 unpriced call"
    assert cost_text(Decimal("14.851"), calls=10) == "$14.85"


def _labels(svg: str) -> list[str]:
    return re.findall(r'class="tick">([^<]*)</text>', svg)


def test_bar_labels_are_drawn_whole_when_they_fit_and_keep_their_name_when_cut() -> None:
    names = ["self-hosted/llama-3.1-8b-support-ft", "growth / onboarding-emails", "a"]
    svg = hbars("c", [(n, Decimal(1), "#000", "1 call") for n in names], label="x")
    assert _labels(svg) == names  # 35 characters fit in a 540 px chart
    assert all(f"<title>{n}: 1 call</title>" in svg for n in names)
    left = float(re.findall(r'<rect class="bar" x="([0-9.]+)"', svg)[0])
    assert left >= 35 * 6.2  # the bars start after the longest label
    huge = "x" * 200
    cut = hbars("c", [(huge, Decimal(1), "#000", "1 call")], label="x")
    (shown,) = _labels(cut)
    assert shown.endswith("…") and len(shown) < 60 and f"<title>{huge}: 1 call</title>" in cut
    split = split_bars("s", [(names[0], [Decimal(1)])], [("input", "#000")], label="x")
    assert _labels(split) == [names[0]]


def test_a_rendered_page_counts_one_call_and_marks_unpriced_features() -> None:
    from datetime import UTC, datetime

    from spendstream.warehouse.report import Period, ReportData
    from spendstream.warehouse.report_page import render

    day = datetime(2026, 3, 2, tzinfo=UTC)
    data = ReportData(period=Period(day, day.replace(day=3)), generated_at=day, calls=1)
    data.top_features = [
        ("search / semantic-search", Decimal("0.00896925"), 1, 0),
        ("research / doc-classifier", Decimal(0), 2694, 2694),
    ]
    page = render(data)
    assert "$0.00897 · 1 call<" in page and "1 calls" not in page
    assert "unpriced · 2,694 calls" in page and "$0.00 · 2,694" not in page
    assert 'on <span id="summary-calls" data-calls="1">1 call</span>' in page


def test_bars_scale_to_the_largest_value_in_exact_decimal() -> None:
    svg = hbars(
        "c", [("a", Decimal("2"), "#000", "2"), ("b", Decimal("1"), "#000", "1")], label="x"
    )
    widths = [float(w.split('"')[0]) for w in svg.split('width="')[2:]]
    assert widths[0] == 2 * widths[1]


def test_the_live_status_counts_one_fact_in_the_singular() -> None:
    from datetime import UTC, datetime

    from spendstream.warehouse.live_page import LiveExtras, status_text

    at = datetime(2026, 3, 2, 10, 0, 5, tzinfo=UTC)
    assert status_text(LiveExtras("v", 1, at, {})) == "live · 1 fact · as of 10:00:05 UTC"
    assert status_text(LiveExtras("v", 1234, at, {})) == "live · 1,234 facts · as of 10:00:05 UTC"
