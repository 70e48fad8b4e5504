"""One batch of facts as the detectors read it: numpy columns, each computed once, on demand.

The input is an Arrow table with the schema ``spendstream.table_schemas.FACTS`` (rows in
arrival order). Each row gets its *position* ``(watermark_us, partition, row_base + row)``:
the watermark is the running maximum of event time over the rows so far (the engine's
carried watermark included), so positions sort rows in arrival order within a batch and
interleave the batches of several usage partitions by event time (``stream.engine``).
``row_base`` is 0 where one batch is judged alone; a scope owner merging several batches of
one partition in a round numbers their rows on from each other (``ScopeEngine.merge``), so
that rows sharing a watermark in two batches keep their arrival order.

Money stays exact: ``cost_usd`` is decimal128(38, 18); group sums are taken on its
integer representation, split into limbs that int64 cannot overflow, and rows' Decimals
are read only where a rule must judge them one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal
from functools import cached_property

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.scopes import GLOBAL, SCOPE_FIELDS
from spendstream.sorting import stable_order, unique_first
from spendstream.stream.grouping import Groups
from spendstream.stream.windows import from_us

__all__ = ["Codes", "FactColumns", "Pos", "units_to_usd"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
# Where a row is judged: (watermark at the row, usage partition, row number in its round).
Pos = tuple[int, int, int]

_MASK32 = np.int64(0xFFFFFFFF)


# Multiplying by 1E-18 only sets the exponent: exact while the count has at most this
# context's digits (a cost sum of 1e9 USD has 27), and ~0.1 us sooner than parsing text.
_EXACT = Context(prec=60)
_ATTO = Decimal("1E-18")
_EXACT_BELOW = 10**60


def units_to_usd(units: int) -> Decimal:
    """An exact Decimal with 18 fractional digits from an integer count of 1e-18 USD."""
    if -_EXACT_BELOW < units < _EXACT_BELOW:
        return _EXACT.multiply(Decimal(units), _ATTO)
    return Decimal(f"{units}E-18")


@dataclass(frozen=True, slots=True)
class Codes:
    """A string column dictionary-encoded: ``index[row]`` into ``values``, -1 for null."""

    index: I64
    values: list[str]

    def code_of(self, value: str) -> int:
        try:
            return self.values.index(value)
        except ValueError:
            return -1


class FactColumns:
    """The columns of one batch of facts, with each row's watermark and position."""

    # A slice of another batch's columns (``slice``): (that batch, first row, end row).
    _parent: tuple[FactColumns, int, int] | None = None

    def __init__(
        self,
        table: pa.Table,
        watermark_us: int | None = None,
        partition: int = 0,
        row_base: int = 0,
    ):
        self.table = table
        self.n = table.num_rows
        self.partition = partition
        self.row_base = row_base
        self.wm_start = watermark_us
        ts = table.column("ts").combine_chunks().cast(pa.int64())
        self.ts_us: I64 = ts.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if self.n:
            run = np.maximum.accumulate(self.ts_us)
            self.wm_us: I64 = run if watermark_us is None else np.maximum(run, watermark_us)
            self.wm_end: int | None = int(self.wm_us[-1])
        else:
            self.wm_us = np.zeros(0, dtype=np.int64)
            self.wm_end = watermark_us

    def slice(self, start: int, stop: int) -> FactColumns:
        """Rows ``[start, stop)`` as a batch of their own, equal to ``FactColumns`` of
        ``table.slice(...)`` after the rows before them (positions count from ``start``;
        each string column dictionary-encoded in the slice's own order of first
        appearance), but reading the columns this batch has decoded instead of decoding
        them again: a batch is cut into up to nine event-time slices (``stream.rounds``)."""
        part = FactColumns.__new__(FactColumns)
        part.table = self.table.slice(start, stop - start)
        part.n = stop - start
        part.partition = self.partition
        part.row_base = 0
        part.wm_start = self.wm_start if start == 0 else int(self.wm_us[start - 1])
        part.ts_us = self.ts_us[start:stop]
        part.wm_us = self.wm_us[start:stop]
        part.wm_end = int(part.wm_us[-1]) if part.n else part.wm_start
        part._parent = (self, start, stop)
        return part

    def pos(self, row: int) -> Pos:
        return (int(self.wm_us[row]), self.partition, self.row_base + row)

    def positions(self, rows: I64) -> list[Pos]:
        """``pos`` of each of ``rows``, in one go."""
        part, base = self.partition, self.row_base
        return [
            (w, part, base + r)
            for w, r in zip(self.wm_us[rows].tolist(), rows.tolist(), strict=True)
        ]

    def ts_at(self, row: int) -> datetime:
        return from_us(int(self.ts_us[row]))

    def _array(self, name: str) -> pa.Array:
        return self.table.column(name).combine_chunks()

    def codes(self, name: str) -> Codes:
        cached = self._codes.get(name)
        if cached is None and self._parent is not None:
            parent, start, stop = self._parent
            cached = self._codes[name] = _recoded(parent.codes(name), start, stop)
        elif cached is None:
            encoded = self._array(name).dictionary_encode()
            index = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
            cached = self._codes[name] = Codes(
                index.astype(np.int64, copy=False), encoded.dictionary.to_pylist()
            )
        return cached

    @cached_property
    def _codes(self) -> dict[str, Codes]:
        return {}

    def scope_codes(self, kind: str) -> tuple[Codes, list[str]]:
        """Each row's scope of one kind (``spendstream.scopes``) and the scope strings."""
        if kind == GLOBAL:
            return Codes(np.zeros(self.n, dtype=np.int64), [GLOBAL]), [GLOBAL]
        codes = self.codes(SCOPE_FIELDS[kind])
        names = self._scope_names.get(kind)
        if names is None:  # several detectors ask for the same kind's; none changes them
            names = self._scope_names[kind] = [f"{kind}:{v}" for v in codes.values]
        return codes, names

    @cached_property
    def _scope_names(self) -> dict[str, list[str]]:
        return {}

    def ints(self, name: str, null: int = 0) -> I64:
        """An integer column as int64, nulls as ``null``."""
        cached = self._ints.get((name, null))
        if cached is None and self._parent is not None:
            parent, start, stop = self._parent
            cached = self._ints[(name, null)] = parent.ints(name, null)[start:stop]
        elif cached is None:
            arr = pc.fill_null(self._array(name), null)
            cached = self._ints[(name, null)] = arr.to_numpy(zero_copy_only=False).astype(
                np.int64, copy=False
            )
        return cached

    @cached_property
    def _ints(self) -> dict[tuple[str, int], I64]:
        return {}

    def strings(self, name: str, rows: I64) -> list[str | None]:
        return self._array(name).take(pa.array(rows)).to_pylist()  # type: ignore[no-any-return]

    @cached_property
    def priced(self) -> Bools:
        if self._parent is not None:
            parent, start, stop = self._parent
            return parent.priced[start:stop]
        return pc.fill_null(self._array("priced"), False).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]

    @cached_property
    def _cost(self) -> pa.Array:
        return self._array("cost_usd")

    @cached_property
    def cost_f(self) -> F64:
        """Cost as float (0 where unpriced): only to pick candidates, never to decide."""
        if self._parent is not None:
            parent, start, stop = self._parent
            return parent.cost_f[start:stop]
        arr = pc.fill_null(self._cost.cast(pa.float64()), 0.0)
        return arr.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]

    @cached_property
    def _limbs(self) -> tuple[I64, I64, I64]:
        # decimal128 is a little-endian two's complement integer of 1e-18 USD: (hi, lo).
        # lo is split in two 32-bit halves so that int64 sums of a batch cannot overflow.
        if self._parent is not None:
            parent, start, stop = self._parent
            hi, lo_hi, lo_lo = parent._limbs
            return hi[start:stop], lo_hi[start:stop], lo_lo[start:stop]
        arr = self._cost
        raw = np.frombuffer(arr.buffers()[1], dtype="<u8")
        raw = raw[2 * arr.offset : 2 * (arr.offset + len(arr))]
        lo, hi = raw[0::2], raw[1::2].view(np.int64)
        priced = self.priced
        hi = np.where(priced, hi, 0)
        lo_hi = np.where(priced, (lo >> np.uint64(32)).astype(np.int64), 0)
        lo_lo = np.where(priced, lo.astype(np.int64) & _MASK32, 0)
        return hi, lo_hi, lo_lo

    def cost_sums(self, groups: Groups, sel: I64 | None = None) -> list[Decimal]:
        """Exact cost per group of ``groups`` (unpriced rows count 0). ``sel``: the sorted
        positions to sum (default all); a group with none sums to 0."""
        hi, lo_hi, lo_lo = self._limbs
        rows = groups.rows
        if len(rows) == 0:
            return []
        sums = [np.add.reduceat(limb[rows], groups.starts).tolist() for limb in (hi, lo_hi, lo_lo)]
        return [
            units_to_usd((h << 64) + (m << 32) + lo)
            for h, m, lo in zip(sums[0], sums[1], sums[2], strict=True)
        ]

    def cost_sum(self, rows: I64) -> Decimal:
        """Exact cost of ``rows`` (unpriced rows count 0)."""
        hi, lo_hi, lo_lo = (int(limb[rows].sum()) for limb in self._limbs)
        return units_to_usd((hi << 64) + (lo_hi << 32) + lo_lo)

    def crossing(
        self, rows: I64, start: Decimal, bar: Decimal, strict: bool
    ) -> tuple[int, Decimal] | None:
        """The first ``k`` where ``start`` plus the cost of ``rows[:k + 1]`` reaches ``bar``
        (``>=``; ``>`` when ``strict``), and that running total; None if it never does.

        Float running sums only narrow the search; the answer is checked on exact sums. Costs
        are never negative, so the running total only grows."""
        if not len(rows):
            return None
        costs = self.cost_f[rows]
        if costs.min() < 0:
            return self._crossing_by_row(rows, 0, start, bar, strict)
        run = float(start) + np.cumsum(costs)
        fbar = float(bar)
        margin = (abs(fbar) + abs(float(run[-1]))) * 1e-9 + 1e-12
        lo = int(np.searchsorted(run, fbar - margin, side="left"))
        if lo >= len(rows):
            return None
        before = start + self.cost_sum(rows[:lo]) if lo else start
        return self._crossing_by_row(rows, lo, before, bar, strict)

    def _crossing_by_row(
        self, rows: I64, lo: int, total: Decimal, bar: Decimal, strict: bool
    ) -> tuple[int, Decimal] | None:
        step = 16
        while lo < len(rows):
            for k, cost in enumerate(self.costs(rows[lo : lo + step]), lo):
                if cost is not None:
                    total += cost
                if total > bar or (not strict and total == bar):
                    return k, total
            lo += step
            step *= 4
        return None

    def costs(self, rows: I64 | list[int]) -> list[Decimal | None]:
        return self._cost.take(pa.array(rows, type=pa.int64())).to_pylist()  # type: ignore[no-any-return]


def _recoded(whole: Codes, start: int, stop: int) -> Codes:
    """The codes of rows ``[start, stop)`` of ``whole``'s column, as dictionary-encoding
    those rows alone gives them: values numbered in order of first appearance, -1 null."""
    index = whole.index[start:stop]
    valid = index >= 0
    present, first, _ = unique_first(index[valid])
    in_order = present[stable_order(first)]
    new_of = np.full(len(whole.values) + 1, -1, dtype=np.int64)  # the last: for -1 (null)
    new_of[in_order] = np.arange(len(in_order), dtype=np.int64)
    return Codes(new_of[index], [whole.values[c] for c in in_order.tolist()])
