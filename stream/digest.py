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


def _binary(rows: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """A binary array whose i-th value is ``rows[i]`` (n x width bytes), null where not
    ``valid`` (None: valid in every row)."""
    n, width = rows.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.binary(), n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(rows))]
    )


@functools.cache
def _tag(name: str) -> bytes:
    return hashlib.blake2b(name.encode(), digest_size=3).digest()


_Layout = tuple[tuple[str, str], ...]  # (field name, numpy dtype of its value bytes) in order


@functools.lru_cache(maxsize=256)
def _layout(layout: _Layout) -> tuple[np.dtype, bytes]:
    """The record dtype of tag + value per field, and one row with the tags in place."""
    names, formats, offsets = [], [], []
    width = 0
    for i, (_, fmt) in enumerate(layout):
        names += [f"t{i}", f"v{i}"]
        formats += ["V3", fmt]
        offsets += [width, width + 3]
        width += 3 + np.dtype(fmt).itemsize
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": width})
    row = np.zeros(width, np.uint8)
    for i, (name, _) in enumerate(layout):
        row.view(dtype)[f"t{i}"] = np.frombuffer(_tag(name), "V3")[0]
    return dtype, row.tobytes()


def _repeated(row: bytes, n: int) -> np.ndarray:
    """``n`` copies of ``row``, an n x len(row) array: one written, then doubled by
    contiguous copies. Writing a 3-byte tag into every row instead is a strided copy of
    tiny items, ~3 us per 1,000 rows and field (with the values, most of what encoding a
    batch took); this is ~1.7 us per 1,000 rows of 60 bytes, whatever the fields."""
    width = len(row)
    flat = np.empty(n * width, np.uint8)
    flat[:width] = np.frombuffer(row, np.uint8)
    done, total = width, n * width
    while done < total:
        step = min(done, total - done)
        flat[done : done + step] = flat[:step]
        done += step
    return flat.reshape(n, width)


class _Encoder:
    """A batch's encoded fields as the binary arrays to join, in name order.

    Consecutive fixed-width fields present in every row go out as one array (fewer arrays
    for Arrow to join); a field present in some rows is its own, null where left out.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.parts: list[pa.Array] = []
        self._run: list[tuple[str, np.ndarray]] = []

    def fixed(self, name: str, values: np.ndarray, present: np.ndarray) -> None:
        if present.all():
            self._run.append((name, values))
        elif present.any():
            self.flush()
            self.parts.append(_binary(self._rows([(name, values)]), present))

    def flush(self) -> None:
        if self._run:
            self.parts.append(_binary(self._rows(self._run), None))
            self._run = []

    def _rows(self, fields: list[tuple[str, np.ndarray]]) -> np.ndarray:
        dtype, row = _layout(tuple((name, values.dtype.str) for name, values in fields))
        rows = _repeated(row, self.n)
        records = rows.view(dtype)[:, 0]
        for i, (_, values) in enumerate(fields):
            records[f"v{i}"] = values
        return rows


def _valid(col: pa.Array) -> np.ndarray:
    if col.null_count == 0:
        return np.ones(len(col), dtype=bool)
    return np.asarray(col.is_valid())


def _fixed_values(name: str, col: pa.Array, default: Any) -> tuple[np.ndarray, np.ndarray]:
    """The field's value bytes per row (a fixed-width numpy dtype) and where it is present."""
    n = len(col)
    typ = col.type
    present = _valid(col)
    if default is not None:
        present &= np.asarray(pc.fill_null(pc.not_equal(col, pa.scalar(default, typ)), False))
    filled = col.fill_null(pa.scalar(False if pa.types.is_boolean(typ) else 0, typ))
    if pa.types.is_boolean(typ):
        return np.asarray(filled, dtype=np.uint8), present
    if pa.types.is_integer(typ):
        return np.asarray(filled.cast(pa.int64())).astype("<i8", copy=False), present
    if pa.types.is_floating(typ):
        values = np.asarray(filled.cast(pa.float64())) + 0.0  # -0.0 + 0.0 == +0.0
        return values.astype("<f8", copy=False), present
    if pa.types.is_timestamp(typ):
        micros = filled.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        return np.asarray(micros).astype("<i8", copy=False), present
    if pa.types.is_decimal(typ):
        scaled = filled.cast(pa.decimal128(38, COST_SCALE))
        raw = np.frombuffer(scaled.buffers()[1], dtype=np.uint8)
        start = scaled.offset * 16
        # Arrow keeps decimals as 16-byte little-endian two's complement already.
        return raw[start : start + n * 16].view("V16"), present
    raise TypeError(f"no digest encoding for {name}: {typ}")


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
    encoder = _Encoder(n)
    for name in names:
        col = columns[name]
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if col.null_count == n and defaults.get(name) is None:
            continue  # left out of every row
        if pa.types.is_string(col.type):
            if defaults.get(name) is not None:
                col = pc.if_else(pc.equal(col, defaults[name]), pa.scalar(None, col.type), col)
            # The tag + 4-byte byte length, then the UTF-8 bytes; both left out where null.
            lengths = np.asarray(pc.fill_null(pc.binary_length(col), 0)).astype("<u4")
            present = _valid(col)
            if present.any():
                encoder.fixed(name, lengths, present)
                encoder.flush()
                encoder.parts.append(col.cast(pa.binary()))
        elif pa.types.is_map(col.type):
            encoder.flush()
            encoder.parts.append(_map_part(name, col))
        else:
            encoder.fixed(name, *_fixed_values(name, col, defaults.get(name)))
    encoder.flush()
    if not encoder.parts:  # every field left out of every row: each encodes to no bytes
        return _hashed(b"", [0] * (n + 1))
    joined = pc.binary_join_element_wise(*encoder.parts, b"", null_handling="skip")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[
        joined.offset : joined.offset + n + 1
    ].tolist()
    data = joined.buffers()[2]
    return _hashed(data.to_pybytes() if data is not None else b"", offsets)


def _hashed(encoded: bytes, offsets: list[int]) -> pa.Array:
    """BLAKE2b of each ``encoded[offsets[i]:offsets[i + 1]]``, as a 16-byte binary array."""
    copy = hashlib.blake2b(digest_size=DIGEST_BYTES, person=_PERSON).copy
    out = []
    for start, end in itertools.pairwise(offsets):
        h = copy()
        h.update(encoded[start:end])
        out.append(h.digest())
    return pa.FixedSizeBinaryArray.from_buffers(
        DIGEST_TYPE, len(out), [None, pa.py_buffer(b"".join(out))]
    )
