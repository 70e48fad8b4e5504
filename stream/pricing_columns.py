"""Arrow plumbing of columnar pricing: columns in, decimal128 money out (no pricing rules).

``pricing_table`` builds the columns pricing reads from event-like objects;
``costs_from_table`` reads a priced table back as ``Cost`` objects; the private helpers
turn columns into numpy codes and group keys, flatten the ``tool_requests`` map, and write
exact integer amounts into decimal128(38, 18) buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.producers.event import TOKEN_FIELDS
from spendstream.records import Cost
from spendstream.sorting import unique_first
from spendstream.table_schemas import COUNT_MAP, MONEY, TS

__all__ = ["COMPONENTS", "PRICE_COLUMNS", "costs_from_table", "pricing_table"]

# The cost components in column order; cost_usd is their sum.
COMPONENTS = ("input", "cache_read", "cache_write", "output", "tool")
PRICE_COLUMNS = (*(f"{c}_cost_usd" for c in COMPONENTS), "cost_usd", "priced", "price_source")
_TOKEN_COLUMNS = TOKEN_FIELDS


def column(events: pa.Table, name: str, n: int) -> np.ndarray:
    """An int64 token column as numpy (absent or null: 0)."""
    if name not in events.column_names:
        return np.zeros(n, dtype=np.int64)
    col = events.column(name)
    if col.null_count:
        col = pc.fill_null(col, 0)
    return np.asarray(col.to_numpy(), dtype=np.int64)


def codes(events: pa.Table, name: str, n: int) -> tuple[np.ndarray, list[Any]]:
    """Dictionary codes of a string column (-1 for null or absent) and its values."""
    if name not in events.column_names:
        return np.full(n, -1, dtype=np.int64), []
    enc = pc.dictionary_encode(events.column(name).combine_chunks())
    idx = enc.indices.fill_null(-1).to_numpy().astype(np.int64)
    return idx, enc.dictionary.to_pylist()


def money(units: np.ndarray, big: dict[int, int], valid: np.ndarray) -> pa.Array:
    """decimal128(38, 18) from unscaled int64 values plus exact Python ints at ``big`` rows."""
    n = len(units)
    words = np.zeros((n, 2), dtype=np.int64)
    words[:, 0] = units
    for i, v in big.items():
        low = v & 0xFFFF_FFFF_FFFF_FFFF
        words[i, 0] = low - (1 << 64) if low >= 1 << 63 else low
        words[i, 1] = v >> 64
    validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        MONEY, n, [validity, pa.py_buffer(words)], null_count=int(n - valid.sum())
    )


def group(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Group ids per row (0..g-1) and each group's first row, for rows equal in every part."""
    n = len(parts[0])
    radix = [int(p.max()) + 2 for p in parts]  # codes are >= -1
    key = np.zeros(n, dtype=np.int64)
    total = 1
    for p, r in zip(parts, radix, strict=True):
        total *= r
        if total >= 2**62:  # too many distinct values for one int64 key: compare rows
            _, firsts, inverse = np.unique(
                np.stack(parts, axis=1), axis=0, return_index=True, return_inverse=True
            )
            return inverse.reshape(-1), firsts
        key = key * r + (p + 1)
    _, firsts, inverse = unique_first(key)
    return inverse, firsts


class ToolColumn:
    """The tool_requests map column flattened: one entry per (row, tool)."""

    def __init__(
        self,
        rows: np.ndarray,
        codes: np.ndarray,
        counts: np.ndarray,
        names: list[str],
        col: pa.Array,
    ) -> None:
        self.rows, self.codes, self.counts, self.names, self.col = rows, codes, counts, names, col

    @classmethod
    def of(cls, events: pa.Table) -> ToolColumn | None:
        if "tool_requests" not in events.column_names:
            return None
        col = events.column("tool_requests").combine_chunks()
        if col.null_count == len(col):
            return None
        offsets = np.asarray(col.offsets, dtype=np.int64)
        lengths = np.diff(offsets) * np.asarray(col.is_valid(), dtype=np.int64)
        if not lengths.any():
            return None
        start, stop = int(offsets[0]), int(offsets[-1])
        keys = pc.dictionary_encode(col.keys.slice(start, stop - start))
        counts = col.items.slice(start, stop - start)
        rows = np.repeat(np.arange(len(col), dtype=np.int64), np.diff(offsets))
        valid = np.repeat(lengths > 0, np.diff(offsets))
        return cls(
            rows[valid],
            np.asarray(keys.indices.to_numpy(zero_copy_only=False), dtype=np.int64)[valid],
            np.asarray(pc.fill_null(counts, 0).to_numpy(), dtype=np.int64)[valid],
            keys.dictionary.to_pylist(),
            col,
        )

    def maps(self, rows: np.ndarray) -> dict[int, dict[str, int]]:
        out = {}
        for i, pairs in zip(rows.tolist(), self.col.take(pa.array(rows)).to_pylist(), strict=True):
            if pairs:
                out[i] = dict(pairs)
        return out


def pricing_table(events: Sequence[Any]) -> pa.Table:
    """The columns pricing reads, from event-like objects (``UsageEvent``s or anything with
    their attributes; the dimensions beyond the contract's default to 0/null)."""
    try:
        # UsageEvents keep every field in __dict__: a dict lookup per field is the fast way.
        rows: list[Any] = [e.__dict__ for e in events]
        if rows and any(name not in rows[0] for name in _TOKEN_COLUMNS):
            raise AttributeError
    except AttributeError:
        rows = [_FieldsOf(e) for e in events]
    cols: dict[str, pa.Array] = {
        "ts": pa.array([d["ts"] for d in rows], TS),
        "provider": pa.array([d["provider"] for d in rows], pa.string()),
        "model": pa.array([d["model"] for d in rows], pa.string()),
        "batch": pa.array([d["batch"] for d in rows], pa.bool_()),
    }
    for name in _TOKEN_COLUMNS:
        cols[name] = pa.array([d[name] for d in rows], pa.int64())
    for name in ("service_tier", "region"):
        cols[name] = pa.array([d[name] for d in rows], pa.string())
    tools = [d["tool_requests"] for d in rows]
    cols["tool_requests"] = pa.array([list(t.items()) if t else None for t in tools], COUNT_MAP)
    return pa.table(cols)


class _FieldsOf:
    """An event-like object's attributes by name; the dimensions it lacks read as unset."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __getitem__(self, name: str) -> Any:
        return getattr(self.obj, name, 0 if name in _TOKEN_COLUMNS else None)


def costs_from_table(priced: pa.Table) -> list[Cost | None]:
    """The Cost of each row of a ``price_table`` result (None where ``priced`` is false)."""
    cols = [priced.column(name).to_pylist() for name in PRICE_COLUMNS]
    inp, read, write, out, tool, total, ok, source = cols
    return [
        Cost(inp[i], read[i], write[i], out[i], total[i], source[i], tool[i]) if ok[i] else None
        for i in range(priced.num_rows)
    ]
