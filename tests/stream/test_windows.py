"""stream/windows.py: period_bounds, the calendar of WindowRule in datetimes, and the
retention rule by which ``Windowed.expire`` drops state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendstream.stream.windows import Windowed, WindowRule, period_bounds, to_us
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


@pytest.mark.parametrize("size", ["hour", "day", "month"])
@pytest.mark.parametrize("history", [timedelta(0), timedelta(hours=24)])
def test_expiry_drops_exactly_the_windows_past_retention(size: str, history: timedelta) -> None:
    # Retention (module docstring): a window's state is kept while end + grace + history >=
    # watermark. The window ending right at that bound may still take a late fact (history
    # 0) or be read as a baseline, so it must stay; every older one goes, whatever order
    # the windows were written in.
    grace = timedelta(minutes=10)
    bounds = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(30):
        bounds.append(reference_bounds(start, size))
        start = bounds[-1][1]
    rule = WindowRule(size, grace // _US, history // _US)  # type: ignore[arg-type]
    by_put: Windowed[int] = Windowed(rule)
    for i, (s, _) in reversed(list(enumerate(bounds))):
        by_put.put(to_us(s), "k", i)
    by_batch: Windowed[int] = Windowed(rule)
    by_batch.put_many([(to_us(s), "k") for s, _ in bounds], range(len(bounds)))
    for windowed in (by_put, by_batch):
        # Twice: once past the 11 oldest windows, then past all but the last 5.
        dropped: list[int] = []
        for last in (bounds[10][1], bounds[-5][1]):
            watermark = last + grace + history
            gone = windowed.expire(to_us(watermark), collect=True)
            past = [i for i, (_, end) in enumerate(bounds) if end + grace + history < watermark]
            assert [v for _, _, v in windowed.items()] == list(range(len(past), len(bounds)))
            dropped += sorted(v for _, _, v in gone)
            assert dropped == past
        assert [v for _, _, v in windowed.items()] == list(range(len(bounds) - 5, len(bounds)))


@pytest.mark.parametrize("size", ["hour", "day", "month"])
def test_a_window_takes_facts_until_its_end_plus_grace_inclusive(size: str) -> None:
    # Grace (module docstring): [start, end) takes a fact while end + grace >= watermark.
    grace = timedelta(minutes=10)
    rule = WindowRule(size, grace // _US)  # type: ignore[arg-type]
    starts, ends = zip(
        *(reference_bounds(datetime(2026, m, 15, tzinfo=UTC), size) for m in (1, 2, 12)),
        strict=True,
    )
    for step, expected in ((timedelta(0), True), (_US, False)):
        watermarks = np.array([to_us(end + grace + step) for end in ends], dtype=np.int64)
        taken = rule.accepted(np.array([to_us(s) for s in starts], dtype=np.int64), watermarks)
        assert taken.tolist() == [expected] * len(starts)


@given(
    st.lists(_TIMES, min_size=1, max_size=20), st.sampled_from(["minute", "hour", "day", "month"])
)
def test_column_starts_and_ends_equal_the_one_value_calendar(
    times: list[datetime], size: str
) -> None:
    # The detectors floor whole columns (starts/ends); before 1970 a window still starts in
    # the past (module docstring): a truncating remainder there left the column's windows a
    # step later than start()'s, and survived a mutation pass.
    rule = WindowRule(size, 0)  # type: ignore[arg-type]
    ts = np.array([to_us(t) for t in times], dtype=np.int64)
    starts = rule.starts(ts)
    assert starts.tolist() == [rule.start(int(t)) for t in ts]
    assert rule.ends(starts).tolist() == [rule.end(int(s)) for s in starts]
