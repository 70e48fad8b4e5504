"""stream/windows.py: period_bounds, the calendar of WindowRule in datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendstream.stream.windows import period_bounds
from tests.stream.reference.engine import period_bounds as reference_bounds

_US = timedelta(microseconds=1)
_TIMES = st.datetimes(
    min_value=datetime(1960, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(_TIMES, st.sampled_from(["hour", "day", "month"]))
def test_period_bounds_equal_the_calendar_reference(ts: datetime, period: str) -> None:
    assert period_bounds(ts, period) == reference_bounds(ts, period)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        (
            "minute",
            datetime(2026, 3, 1, 12, 7, tzinfo=UTC),
            datetime(2026, 3, 1, 12, 8, tzinfo=UTC),
        ),
        ("hour", datetime(2026, 3, 1, 12, tzinfo=UTC), datetime(2026, 3, 1, 13, tzinfo=UTC)),
        ("day", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)),
        ("month", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_window_holds_its_start_and_not_its_end(
    period: str, start: datetime, end: datetime
) -> None:
    assert period_bounds(start, period) == (start, end)
    assert period_bounds(end - _US, period) == (start, end)
    assert period_bounds(end, period)[0] == end
    assert period_bounds(start - _US, period)[1] == start


def test_an_offset_time_falls_in_its_utc_period() -> None:
    # 00:30 at +02:00 is 22:30 UTC the day before.
    ts = datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert period_bounds(ts, "day") == (
        datetime(2026, 2, 28, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    )


def test_an_unknown_size_is_refused_not_read_as_a_month() -> None:
    with pytest.raises(ValueError, match="unknown window size 'week'"):
        period_bounds(datetime(2026, 3, 1, tzinfo=UTC), "week")
