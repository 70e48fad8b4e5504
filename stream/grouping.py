"""Groups of rows in a batch: stable sorts by an integer key, and running aggregates per group.

A detector turns each row into an ``int64`` group key (a scope code and a window, say),
and ``Groups.of(keys, rows)`` sorts the rows by key, keeping arrival order inside a group.
Running counts, sums and maxima then run over the sorted arrays in one numpy pass each,
restarting at every group boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from spendstream.sorting import sorted_runs

__all__ = ["Groups", "combine"]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
S = TypeVar("S", bound=np.generic)


def combine(major: I64, minor: I64) -> I64:
    """One int64 key per (major, minor) pair, ordered like the pairs (both non-negative
    codes; ``minor`` relative to its minimum, so keys stay small)."""
    if len(minor) == 0:
        return major.astype(np.int64)
    lo = minor - minor.min()
    return major.astype(np.int64) * (int(lo.max()) + 1) + lo


@dataclass(slots=True)
class Groups:
    """Rows sorted by group key, stable; group ``g`` is ``rows[starts[g]:ends[g]]``."""

    rows: I64  # row numbers of the batch, sorted by (key, row)
    keys: I64  # the key of each group, ascending
    starts: I64
    ends: I64
    group: I64  # for each sorted position, its group

    @classmethod
    def of(cls, keys: I64, rows: I64) -> Groups:
        """``keys[i]`` is the group key of batch row ``rows[i]`` (``rows`` ascending)."""
        order, sk, new = sorted_runs(keys)
        return cls.runs(rows[order].astype(np.int64), new, sk)

    @classmethod
    def runs(cls, rows: I64, new: npt.NDArray[np.bool_], keys: I64 | None = None) -> Groups:
        """Groups of rows already in group order: a group starts where ``new`` holds."""
        n = len(rows)
        if n == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty, empty, empty, empty)
        starts = np.flatnonzero(new).astype(np.int64)
        ends = np.empty_like(starts)
        ends[:-1] = starts[1:]
        ends[-1] = n
        group = np.cumsum(new, dtype=np.int64) - 1
        key = starts if keys is None else keys[starts]
        return cls(rows, key, starts, ends, group)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def sizes(self) -> I64:
        return self.ends - self.starts

    def rank(self) -> I64:
        """Position of each sorted row inside its group (0 for the first)."""
        return np.arange(len(self.rows), dtype=np.int64) - self.starts[self.group]

    def cumsum(self, values: npt.NDArray[S]) -> npt.NDArray[S]:
        """Running sum inside each group of ``values`` (given in sorted order)."""
        total = np.cumsum(values)
        before = total[self.starts] - values[self.starts]
        return total - before[self.group]

    def cummax(self, values: I64) -> I64:
        """Running maximum inside each group of int64 ``values`` (sorted order)."""
        if len(values) == 0:
            return values
        lo, hi = int(values.min()), int(values.max())
        span = hi - lo + 1
        if span * len(self.starts) < 2**62:
            # Lift each group above the previous one so one accumulate never crosses groups.
            lifted = (values - lo) + self.group * span
            return np.maximum.accumulate(lifted) - self.group * span + lo
        out = np.empty_like(values)
        for s, e in zip(self.starts.tolist(), self.ends.tolist(), strict=True):
            out[s:e] = np.maximum.accumulate(values[s:e])
        return out

    def cummin(self, values: I64) -> I64:
        return -self.cummax(-values)

    def first(self, values: npt.NDArray[S]) -> npt.NDArray[S]:
        return values[self.starts]

    def last(self, values: npt.NDArray[S]) -> npt.NDArray[S]:
        return values[self.ends - 1]

    def total(self, values: I64) -> I64:
        if len(values) == 0:
            return values
        return np.add.reduceat(values, self.starts)

    def any(self, values: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
        """Whether ``values`` (sorted order) holds in any row of each group: a reduction
        over each run, ~5x sooner than scattering with ``np.logical_or.at``."""
        if len(values) == 0:
            return np.zeros(0, dtype=np.bool_)
        return np.logical_or.reduceat(values, self.starts)

    def total_f(self, values: F64) -> F64:
        if len(values) == 0:
            return values
        return np.add.reduceat(values, self.starts)

    def maximum(self, values: I64) -> I64:
        if len(values) == 0:
            return values
        return np.maximum.reduceat(values, self.starts)

    def minimum(self, values: npt.NDArray[S]) -> npt.NDArray[S]:
        if len(values) == 0:
            return values
        return np.minimum.reduceat(values, self.starts)

    def first_where(self, mask: npt.NDArray[np.bool_]) -> I64:
        """Per group, the sorted position of its first row where ``mask`` holds, else -1."""
        n = len(self.rows)
        pos = np.where(mask, np.arange(n, dtype=np.int64), n)
        if n == 0:
            return pos
        first = np.minimum.reduceat(pos, self.starts)
        return np.where(first < self.ends, first, -1)
