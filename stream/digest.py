"""A content digest per event: what tells a replay from a different event reusing an id.

``digest = BLAKE2b-128(person=b"spendstream-ev1")`` over the event's validated values,
field by field in name order, ``event_id`` left out (it is the identity, not content):

- a field that is null or equal to its model default is left out entirely, so an event's
  digest does not change when a later schema adds an optional field;
- every other field is its tag -- the first 3 bytes of ``BLAKE2b(<name>)``, so it depends
  on the name alone -- followed by its value: integers as 8 bytes little-endian
  two's complement; ``bool`` as one byte; ``float`` as its 8-byte IEEE-754 little-endian
  bits (``-0.0`` as ``0.0``); timestamps as 8-byte microseconds since the epoch, UTC;
  decimals as the 16-byte little-endian two's complement of value x 10^18; strings as a
  4-byte little-endian byte length and their UTF-8 bytes; maps as a 4-byte count and their
  entries sorted by key, each key as a string and each value as a string or an integer.

Tags are checked to be distinct and every value's length is fixed or stated, so two
different events cannot encode to the same bytes. (Tags, not names: they keep the encoded
event near one BLAKE2b block, which is most of the cost.) The digest depends only on these rules (not on Python's
``hash``, process, platform or pyarrow version); a test pins it on a known event.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.records import COST_SCALE

__all__ = ["DIGEST_BYTES", "DIGEST_TYPE", "digest_column"]

DIGEST_BYTES = 16
DIGEST_TYPE = pa.binary(DIGEST_BYTES)
_PERSON = b"spendstream-ev1"
_EXCLUDED = ("event_id",)


def _le(values: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(values.astype(dtype, copy=False))


def _binary(rows: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A binary array whose i-th value is ``rows[i]`` (n x width bytes), null where not valid."""
    n, width = rows.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    return pa.Array.from_buffers(
        pa.binary(), n, [bitmap, pa.py_buffer(offsets.tobytes()), pa.py_buffer(rows.tobytes())]
    )


@functools.cache
def _tag(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=3).digest()


def _with_prefix(name: str, body: np.ndarray) -> np.ndarray:
    prefix = np.frombuffer(_tag(name), dtype=np.uint8)
    rows = np.empty((body.shape[0], prefix.size + body.shape[1]), dtype=np.uint8)
    rows[:, : prefix.size] = prefix
    rows[:, prefix.size :] = body
    return rows


def _valid(col: pa.Array) -> np.ndarray:
    if col.null_count == 0:
        return np.ones(len(col), dtype=bool)
    return np.asarray(col.is_valid())


def _fixed_part(name: str, col: pa.Array, default: Any) -> pa.Array:
    """The field's tag + fixed-width value bytes; null where left out."""
    n = len(col)
    typ = col.type
    present = _valid(col)
    if default is not None:
        present &= np.asarray(pc.fill_null(pc.not_equal(col, pa.scalar(default, typ)), False))
    filled = col.fill_null(pa.scalar(False if pa.types.is_boolean(typ) else 0, typ))
    if pa.types.is_boolean(typ):
        body = np.asarray(filled, dtype=np.uint8).reshape(n, 1)
    elif pa.types.is_integer(typ):
        body = _le(np.asarray(filled.cast(pa.int64())), "<i8").view(np.uint8).reshape(n, 8)
    elif pa.types.is_floating(typ):
        values = np.asarray(filled.cast(pa.float64())) + 0.0  # -0.0 + 0.0 == +0.0
        body = _le(values, "<f8").view(np.uint8).reshape(n, 8)
    elif pa.types.is_timestamp(typ):
        micros = filled.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        body = _le(np.asarray(micros), "<i8").view(np.uint8).reshape(n, 8)
    elif pa.types.is_decimal(typ):
        scaled = filled.cast(pa.decimal128(38, COST_SCALE))
        raw = np.frombuffer(scaled.buffers()[1], dtype=np.uint8)
        start = scaled.offset * 16
        words = raw[start : start + n * 16].view("<u8")  # Arrow keeps decimals little-endian
        body = _le(words, "<u8").view(np.uint8).reshape(n, 16)
    else:
        raise TypeError(f"no digest encoding for {name}: {typ}")
    return _binary(_with_prefix(name, body), present)


def _string_parts(name: str, col: pa.Array) -> list[pa.Array]:
    """The field's tag + 4-byte byte length, then the UTF-8 bytes; both null where null."""
    lengths = np.asarray(pc.fill_null(pc.binary_length(col), 0)).astype("<u4")
    head = _binary(_with_prefix(name, lengths.view(np.uint8).reshape(-1, 4)), _valid(col))
    return [head, col.cast(pa.binary())]


def _text(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return struct.pack("<I", len(data)) + data


def _value(value: str | int) -> bytes:
    """A map value: a string as above, an integer as 8 bytes (e.g. tool request counts)."""
    if isinstance(value, str):
        return _text(value)
    if type(value) is int:
        return struct.pack("<q", value)
    raise TypeError(f"no digest encoding for a map value {value!r}")


def _map_part(name: str, col: pa.Array) -> pa.Array:
    """The field's tag + count + sorted entries (Python: maps are rare and small)."""
    out: list[bytes | None] = []
    for entries in col.to_pylist():
        if not entries:
            out.append(None)
            continue
        items = sorted(entries, key=lambda kv: kv[0].encode("utf-8", "surrogatepass"))
        body = b"".join(_text(k) + _value(v) for k, v in items)
        out.append(_tag(name) + struct.pack("<I", len(items)) + body)
    return pa.array(out, pa.binary())


def digest_column(columns: Mapping[str, pa.Array], defaults: Mapping[str, Any]) -> pa.Array:
    """The digest of each row of ``columns`` (every event field; ``defaults``: the model's)."""
    names = sorted(n for n in columns if n not in _EXCLUDED)
    if not names:
        raise ValueError("no columns to digest")
    if len({_tag(name) for name in names}) != len(names):
        raise ValueError(f"two of these fields share a digest tag: {names}")
    n = len(columns[names[0]])
    if n == 0:
        return pa.array([], DIGEST_TYPE)
    parts = []
    for name in names:
        col = columns[name]
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if col.null_count == n and defaults.get(name) is None:
            continue  # left out of every row
        if pa.types.is_string(col.type):
            if defaults.get(name) is not None:
                col = pc.if_else(pc.equal(col, defaults[name]), pa.scalar(None, col.type), col)
            parts += _string_parts(name, col)
        elif pa.types.is_map(col.type):
            parts.append(_map_part(name, col))
        else:
            parts.append(_fixed_part(name, col, defaults.get(name)))
    joined = pc.binary_join_element_wise(*parts, b"", null_handling="skip")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[
        joined.offset : joined.offset + n + 1
    ].tolist()
    data = joined.buffers()[2]
    encoded = data.to_pybytes() if data is not None else b""
    copy = hashlib.blake2b(digest_size=DIGEST_BYTES, person=_PERSON).copy
    out = []
    for start, end in itertools.pairwise(offsets):
        h = copy()
        h.update(encoded[start:end])
        out.append(h.digest())
    return pa.FixedSizeBinaryArray.from_buffers(DIGEST_TYPE, n, [None, pa.py_buffer(b"".join(out))])
