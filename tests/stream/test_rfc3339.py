"""stream/rfc3339.py: the column parser gives pydantic's instant for every plain RFC 3339
timestamp and null for anything else (which then goes to pydantic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from spendstream.stream.rfc3339 import parse_micros

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AWARE = TypeAdapter(datetime)


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _pydantic(text: str) -> int | None:
    try:
        value = _AWARE.validate_python(text)
    except ValidationError:
        return None
    if value.tzinfo is None:
        return None
    try:
        return _micros(value.astimezone(UTC))
    except OverflowError:
        return None


@st.composite
def _plain(draw: st.DrawFn) -> str:
    year = draw(st.integers(min_value=1, max_value=9999))
    parts = [f"{year:04d}"] + [
        f"{draw(st.integers(min_value=0, max_value=top)):02d}" for top in (13, 32, 24, 60, 61)
    ]
    text = f"{parts[0]}-{parts[1]}-{parts[2]}T{parts[3]}:{parts[4]}:{parts[5]}"
    digits = draw(st.integers(min_value=0, max_value=8))
    if digits:
        text += "." + "".join(draw(st.sampled_from("0123456789")) for _ in range(digits))
    if draw(st.booleans()):
        return text + draw(st.sampled_from(["Z", "z", "", "+00", "+0000"]))
    sign = draw(st.sampled_from("+-"))
    return text + f"{sign}{draw(st.integers(0, 25)):02d}:{draw(st.integers(0, 60)):02d}"


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.one_of(_plain(), st.text(max_size=34)), min_size=1, max_size=20))
def test_parses_exactly_the_plain_form_and_agrees_with_pydantic(texts: list[str]) -> None:
    parsed = parse_micros(pa.array(texts, pa.string())).to_pylist()
    for text, got in zip(texts, parsed, strict=True):
        if got is not None:
            assert got == _pydantic(text), text


def test_examples() -> None:
    texts = [
        "2026-11-26T00:00:00.265Z",
        "2024-02-29T23:59:59.999999+23:59",
        "2026-03-02T12:00:00-00:00",
        "2026-02-29T00:00:00Z",
        "2026-03-02T24:00:00Z",
        "2026-03-02t12:00:00z",
        "2026-03-02T12:00:00.1234567Z",
        "２０２６-03-02T12:00:00Z",
        None,
    ]
    got = parse_micros(pa.array(texts, pa.string())).to_pylist()
    tz = timezone(timedelta(hours=23, minutes=59))
    assert got == [
        _micros(datetime(2026, 11, 26, 0, 0, 0, 265000, tzinfo=UTC)),
        _micros(datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=tz)),
        _micros(datetime(2026, 3, 2, 12, tzinfo=UTC)),
        None,
        None,
        None,
        None,
        None,
        None,
    ]
    assert parse_micros(pa.array([], pa.string())).to_pylist() == []


def test_the_calendar_edges_hold_in_utc_not_only_in_local_time() -> None:
    texts = [
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:01:00+00:01",
        "0001-01-01T00:00:00+00:01",  # year 0 in UTC
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:58:59-00:01",
        "9999-12-31T23:59:59-00:01",  # year 10000 in UTC
    ]
    first = _micros(datetime(1, 1, 1, tzinfo=UTC))
    last = _micros(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    got = parse_micros(pa.array(texts, pa.string())).to_pylist()
    assert got == [first, first, None, last, last - 999_999, None]
