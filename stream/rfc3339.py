"""RFC 3339 timestamps parsed a column at a time, exactly, for the columnar validator.

Only the form producers write (``2026-11-26T00:00:00.265Z``, ``...+01:00``) is parsed
here: ``YYYY-MM-DDTHH:MM:SS``, an optional fraction of 1-6 digits, then ``Z`` or
``±HH:MM``. Anything else (lower-case ``t``/``z``, a space, 7+ fraction digits, unix
seconds, ...) is left null, so the caller hands that row to pydantic, which knows every
form it accepts. The characters are read as a byte matrix and the calendar arithmetic
is done in integers (days from the civil date), never through a float or the C library,
so a value parsed here is the one pydantic gives.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["parse_micros"]

_WIDTH = 32  # the longest plain form: 2026-11-26T00:00:00.123456+01:00
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_DAY_US = 86_400_000_000
_DIGIT_AT = (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18)
_SEPARATORS = ((4, b"-"), (7, b"-"), (10, b"T"), (13, b":"), (16, b":"))


def _char_matrix(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(n x 32 bytes, length) of each string; bytes past a string's end are spaces.

    Strings are padded to one width and their buffer is read as a matrix without a copy;
    a string longer than the width cannot be the plain form and reads as empty.
    """
    strings = pc.fill_null(values.cast(pa.string()), "")
    length = np.asarray(pc.utf8_length(strings)).astype(np.int64)
    too_long = length > _WIDTH
    if too_long.any():
        strings = pc.if_else(pa.array(too_long), "", strings)
        length[too_long] = 0
    padded = (
        pc.utf8_rpad(strings, _WIDTH, " ").combine_chunks()
        if isinstance(strings, pa.ChunkedArray)
        else pc.utf8_rpad(strings, _WIDTH, " ")
    )
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32)
    first = offsets[padded.offset]
    data = np.frombuffer(padded.buffers()[2], dtype=np.uint8)
    # A multi-byte character makes the row longer than the width in bytes: not the plain form.
    if offsets[padded.offset + len(padded)] - first != len(padded) * _WIDTH:
        ascii_only = np.asarray(pc.equal(pc.binary_length(padded), _WIDTH))
        keep = pc.if_else(pa.array(ascii_only), padded, " " * _WIDTH)
        length[~ascii_only] = 0
        return _char_matrix_of(keep), length
    return data[first : first + len(padded) * _WIDTH].reshape(len(padded), _WIDTH), length


def _char_matrix_of(padded: pa.Array) -> np.ndarray:
    offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32)
    first = offsets[padded.offset]
    data = np.frombuffer(padded.buffers()[2], dtype=np.uint8)
    return data[first : first + len(padded) * _WIDTH].reshape(len(padded), _WIDTH)


# The UTC instants a datetime holds: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z.
_MIN_US = -62_135_596_800_000_000
_MAX_US = 253_402_300_799_999_999


def parse_micros(values: pa.Array) -> pa.Array:
    """Microseconds since the epoch (UTC) of each string; null where it is not the plain form
    or not a real instant (Feb 30, hour 24, second 60, offset hour 24 are all null)."""
    n = len(values)
    if n == 0:
        return pa.array([], pa.int64())
    chars, length = _char_matrix(values)
    # Byte arithmetic wraps: every non-digit character lands above 9.
    digit = chars - np.uint8(ord("0"))
    is_digit = digit <= 9
    rows = np.arange(n)

    def at(pos: np.ndarray) -> np.ndarray:
        return chars[rows, np.clip(pos, 0, _WIDTH - 1)]

    def num(*cols: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.int64)
        for c in cols:
            out = out * 10 + digit[:, c].astype(np.int64)
        return out

    ok = (length >= 20) & (length <= _WIDTH) & is_digit[:, list(_DIGIT_AT)].all(axis=1)
    for pos, sep in _SEPARATORS:
        ok &= chars[:, pos] == sep[0]
    zulu = at(length - 1) == ord("Z")
    zone_start = length - np.where(zulu, 1, 6)
    has_fraction = chars[:, 19] == ord(".")
    fraction_digits = np.where(has_fraction, zone_start - 20, 0)
    ok &= np.where(has_fraction, (fraction_digits >= 1) & (fraction_digits <= 6), zone_start == 19)
    fraction = np.zeros(n, dtype=np.int64)
    for j in range(6):
        inside = j < fraction_digits
        ok &= ~inside | is_digit[:, 20 + j]
        fraction += np.where(inside, digit[:, 20 + j], 0).astype(np.int64) * 10 ** (5 - j)
    sign_char = at(zone_start)
    zone_digits = is_digit[rows[:, None], np.clip(zone_start[:, None] + [1, 2, 4, 5], 0, 31)]
    ok &= zulu | (
        ((sign_char == ord("+")) | (sign_char == ord("-")))
        & (at(zone_start + 3) == ord(":"))
        & zone_digits.all(axis=1)
    )
    zone_digit = digit[rows[:, None], np.clip(zone_start[:, None] + [1, 2, 4, 5], 0, 31)].astype(
        np.int64
    )
    offset_h = np.where(zulu, 0, zone_digit[:, 0] * 10 + zone_digit[:, 1])
    offset_m = np.where(zulu, 0, zone_digit[:, 2] * 10 + zone_digit[:, 3])
    sign = np.where(sign_char == ord("-"), -1, 1)

    y, mo, d = num(0, 1, 2, 3), num(5, 6), num(8, 9)
    h, mi, s = num(11, 12), num(14, 15), num(17, 18)
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    month_ok = (mo >= 1) & (mo <= 12)
    days_in_month = _DAYS_IN_MONTH[np.where(month_ok, mo, 0)] + ((mo == 2) & leap)
    ok &= (y >= 1) & month_ok & (d >= 1) & (d <= days_in_month)
    ok &= (h <= 23) & (mi <= 59) & (s <= 59) & (offset_h <= 23) & (offset_m <= 59)
    # Days from the civil date (H. Hinnant's algorithm; every quantity is >= 0 here).
    yy = y - (mo <= 2)
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * ((mo + 9) % 12) + 2) // 5 + d - 1
    days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
    local_us = days * _DAY_US + ((h * 60 + mi) * 60 + s) * 1_000_000 + fraction
    micros = local_us - sign * (offset_h * 60 + offset_m) * 60_000_000
    # An offset can carry a local time at the calendar's edge past it in UTC
    # ("0001-01-01T00:00:00+00:01" is in year 0): not an instant a datetime can hold.
    ok &= (micros >= _MIN_US) & (micros <= _MAX_US)
    return pa.array(np.where(ok, micros, 0), pa.int64(), mask=~ok)
