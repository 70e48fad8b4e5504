"""Instants given on a command line or in a query string (``--since``, ``--at``, ``?until=``),
and the move to UTC every reader of a time with an offset makes (``in_utc``)."""

from __future__ import annotations

from datetime import UTC, datetime

from spendstream.errors import ConfigError

__all__ = ["in_utc", "parse_instant"]


def in_utc(ts: datetime) -> datetime:
    """``ts`` (aware) in UTC; ``ValueError`` when UTC has no such time: 0001-01-01T00:00+01:00
    is before year 1 there, 9999-12-31T23:59-01:00 after 9999 (``astimezone`` raised
    OverflowError, which no reader's ``except ValueError`` caught)."""
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise ValueError(
            f"{ts.isoformat()} is out of range in UTC (before year 1 or after 9999)"
        ) from None


def parse_instant(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date or time as an aware UTC datetime (naive means UTC); None passes.

    ``name`` is how the caller calls the value (``--since``), for the error message.
    """
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{name} {value!r} is not an ISO 8601 date or time "
            "(e.g. 2026-11-01 or 2026-11-01T12:00:00Z)"
        ) from None
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    try:
        return in_utc(ts)
    except ValueError:  # 9999-12-31T23:59:59-12:00 is past the year 9999 in UTC
        side = "before the year 1" if ts.year == 1 else "past the year 9999"
        raise ConfigError(f"{name} {value!r} is {side} in UTC") from None
