"""Rounds of wide-scope merging: event-time slices of usage batches, and which slices of
several usage partitions can be merged together now.

A scope owner merges the partials of many usage partitions (*lanes*) in *rounds*: a round
is a set of batches whose rows all come, by watermark, before every row not in it, so the
owner judges rows in the order one process would (``stream.engine``). Batches of different
lanes overlap in event time; if each were merged whole, one batch's range would chain into
the next lane's and, under sustained load, no round would ever close (every lane always has
records still to come). So a usage batch's partials are cut into *slices* on a grid of
event time: rows whose watermark falls in ``[k*G, (k+1)*G)`` form one slice. ``G`` is a
power of two of microseconds chosen per batch (at most ``MAX_SLICES`` cells, at least
``MIN_GRID_US``), so the grids of any two batches nest: every multiple of the coarser grid
is a cut in both, and a round can close there once every lane has passed it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.stream.partials import CLOCK

__all__ = [
    "MAX_SLICES",
    "MIN_GRID_US",
    "Slice",
    "grid_us",
    "round_of",
    "slice_bounds",
    "slices_of",
]

MIN_GRID_US = 1 << 17  # ~131 ms: under sustained load a round closes about this often
MAX_SLICES = 8  # cells of event time per batch, at most (a batch spans the grid + 1)


def grid_us(span_us: int) -> int:
    """The grid for a batch whose watermark advances ``span_us``: the least power of two
    of at least ``MIN_GRID_US`` with ``span_us / grid <= MAX_SLICES``."""
    grid = MIN_GRID_US
    while grid * MAX_SLICES < span_us:
        grid <<= 1
    return grid


def slice_bounds(wm_us: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of a batch's slices, given each row's watermark (never
    decreasing). One range for an empty batch."""
    n = len(wm_us)
    if n == 0:
        return [(0, 0)]
    grid = grid_us(int(wm_us[-1]) - int(wm_us[0]))
    cells = wm_us // grid
    cuts = (np.flatnonzero(cells[1:] != cells[:-1]) + 1).tolist()
    edges = [0, *cuts, n]
    return list(pairwise(edges))


def round_of(spans: Sequence[tuple[int | None, int | None]], limit: int | None) -> list[int]:
    """Indexes of the largest round that can be merged now, given each held slice's
    ``(lo, hi)``: the watermarks of its first and last row (None: no rows, no clock yet;
    always released). A round takes slices in order of ``lo`` and may stop after one only
    where the next starts after the highest ``hi`` taken (rows of overlapping slices, or of
    slices meeting at one microsecond, go in one round: positions order equal watermarks by
    partition), and nothing at or past ``limit`` (the least advanced clock of a lane with
    records still to come, whose next rows may sit at that very microsecond; None: every
    lane is caught up)."""
    out = [i for i, (_, hi) in enumerate(spans) if hi is None]
    timed = sorted(
        (i for i, (lo, hi) in enumerate(spans) if hi is not None and lo is not None),
        key=lambda i: (spans[i][0], spans[i][1]),
    )
    take = 0
    top: int | None = None
    for k, i in enumerate(timed):
        hi = spans[i][1]
        assert hi is not None
        top = hi if top is None else max(top, hi)
        if limit is not None and top >= limit:
            break
        nxt = spans[timed[k + 1]][0] if k + 1 < len(timed) else None
        if nxt is None or nxt > top:
            take = k + 1
    out.extend(timed[:take])
    return sorted(out)


@dataclass(frozen=True, slots=True)
class Slice:
    """One slice's partials as a scope owner holds them until its round."""

    index: int  # in its batch, from 0
    count: int  # slices of the batch
    partials: pa.Table  # PARTIALS rows of this slice
    lo: int | None  # watermark of its first row (None: no facts)
    hi: int | None  # ... and of its last

    @property
    def last(self) -> bool:
        return self.index == self.count - 1


def slices_of(partials: pa.Table) -> list[Slice]:
    """A batch's partials (``stream.engine.LocalEngine.process``) cut back into its slices,
    in event-time order; one slice without rows when the batch had no facts."""
    refs = partials.column("batch").to_pylist()
    order = list(dict.fromkeys(refs))
    if not order:
        return [Slice(0, 1, partials, None, None)]
    # A slice's rows come together (LocalEngine writes them so, routing keeps the order):
    # zero-copy views of the batch's table; a filter only if they ever do not.
    starts = [i for i in range(len(refs)) if i == 0 or refs[i] != refs[i - 1]]
    if len(starts) != len(order):
        return [
            _slice(i, len(order), partials.filter(pc.equal(partials.column("batch"), ref)))
            for i, ref in enumerate(order)
        ]
    if len(order) == 1:
        return [_slice(0, 1, partials)]
    # Each slice's clock row, found once for the whole batch: compute calls per slice were
    # most of a scope owner's cost of taking a batch in (a batch has up to 9 slices).
    clocks = _clock_rows(partials)
    out = []
    for i, (start, stop) in enumerate(pairwise([*starts, len(refs)])):
        k = bisect_left(clocks, start, key=lambda c: c[0])
        lo = hi = None
        if k < len(clocks) and clocks[k][0] < stop:
            _, lo, hi = clocks[k]
        out.append(Slice(i, len(order), partials.slice(start, stop - start), lo, hi))
    return out


def _clock_rows(partials: pa.Table) -> list[tuple[int, int, int]]:
    """(row, first_wm, wm_end) of each clock row, in row order (watermarks in us)."""
    rows = pc.indices_nonzero(pc.equal(partials.column("detector"), CLOCK))
    first = partials.column("first_wm").take(rows).cast(pa.int64()).to_pylist()
    end = partials.column("wm_end").take(rows).cast(pa.int64()).to_pylist()
    return list(zip(rows.to_pylist(), first, end, strict=True))


def _slice(index: int, count: int, rows: pa.Table) -> Slice:
    """A slice of ``rows``, its clock from its first clock row (none: no facts)."""
    clocks = _clock_rows(rows)
    lo, hi = (clocks[0][1], clocks[0][2]) if clocks else (None, None)
    return Slice(index, count, rows, lo, hi)
