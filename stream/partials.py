"""Partial aggregates: what one batch of facts adds to a scope's window, and where it came from.

A detector over windows (anomaly, budgets, cache, unpriced) works in two steps. ``summarize``
turns a batch into one ``Partial`` per (scope, window): counts and exact sums of the rows
the window takes, and the positions of its first and last row. ``merge`` folds partials
into the detector's state; where a merge may cross a threshold (or the partials say only a
replay can judge the scope) it reads the facts themselves through ``Details`` and judges
those rows one by one. In one process the facts are the batch in memory; across workers
they are fetched from the batch's published facts record (``DetailSource``).

``PARTIALS`` is the Arrow form that travels between workers (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from spendstream.stream.columns import FactColumns, Pos
from spendstream.stream.grouping import Groups
from spendstream.table_schemas import MONEY

__all__ = [
    "CLOCK",
    "PARTIALS",
    "DetailSource",
    "Details",
    "FactsUnreadable",
    "Partial",
    "Source",
    "by_group",
    "by_window",
    "partials_from_table",
    "partials_table",
    "slice_ref",
    "spans",
    "split_ref",
    "window_sorted",
]

CLOCK = "clock"  # a row per source batch, sent to every scope owner: time passed
ALERT = "alert"  # an alert of a per-key engine whose scope a scope owner's breakers hold

_TS = pa.timestamp("us", tz="UTC")
PARTIALS = pa.schema(
    [
        ("detector", pa.string()),  # anomaly | budget | cache | unpriced | clock | alert
        ("scope", pa.string()),  # the group: a scope, or provider/model (unpriced)
        ("variant", pa.int32()),  # anomaly: index in [anomaly] scopes; budget: in [[budget]]
        ("window_start", _TS),
        ("window_end", _TS),
        ("rows", pa.int64()),  # rows the window took from the batch
        ("spend_usd", MONEY),  # exact sum of their cost (anomaly, budget)
        ("input_tokens", pa.int64()),  # cache
        ("cache_read_tokens", pa.int64()),  # cache
        ("low_share", pa.float64()),  # cache: lowest running read share in the batch
        ("first_ts", _TS),  # earliest event time among the rows
        ("first_wm", _TS),  # position of the first row: (watermark, partition, row)
        ("first_row", pa.int64()),
        ("last_wm", _TS),  # position of the last row
        ("last_row", pa.int64()),
        ("replay", pa.bool_()),  # only a replay of the scope's rows can judge it
        ("message", pa.string()),  # alert rows: "<kind>\x1f<message>\x1f<period_end>"
        ("partition", pa.int32()),  # the source: usage partition ...
        ("batch", pa.string()),  # ... and the batch's reference for DetailSource
        ("wm_start", _TS),  # the source's watermark before the batch (null: none yet)
        ("wm_end", _TS),  # ... and after it
    ]
)


_SLICE = "#"


def slice_ref(batch: str, start: int, stop: int) -> str:
    """How partials name rows ``[start, stop)`` of the batch ``batch`` names."""
    return f"{batch}{_SLICE}{start}:{stop}"


def split_ref(ref: str) -> tuple[str, tuple[int, int] | None]:
    """``(batch, (start, stop))`` of a slice reference; ``(ref, None)`` for a whole batch."""
    batch, sep, rows = ref.rpartition(_SLICE)
    if not sep:
        return ref, None
    start, _, stop = rows.partition(":")
    return batch, (int(start), int(stop))


class DetailSource(Protocol):
    """Where a scope owner reads a batch's facts back (its published facts record)."""

    def facts_of(self, batch: str) -> pa.Table:
        """``FactsUnreadable`` when they cannot be had, now or later."""
        ...


class FactsUnreadable(LookupError):
    """The facts ``batch`` names (a batch's reference, or a slice's when only its rows are
    wrong) cannot be had, now or ever: its record is gone (a topic's retention), was never written, is not a facts
    record, or holds fewer rows than partials name. Read again, a merge that needs them
    fails the same way: the partials naming that batch can only be set aside."""

    def __init__(self, batch: str, why: str) -> None:
        super().__init__(f"the facts of batch {batch} cannot be read: {why}")
        self.batch = batch
        self.why = why


@dataclass(frozen=True, slots=True)
class Source:
    """A batch of facts as one per-key engine judged it."""

    partition: int
    batch: str
    wm_start: int | None
    wm_end: int | None


@dataclass(slots=True)
class Partial:
    detector: str
    scope: str
    variant: int
    window_start: int
    window_end: int
    rows: int
    spend: Decimal
    input_tokens: int
    cache_read_tokens: int
    low_share: float
    first_ts: int
    first: Pos
    last: Pos
    replay: bool
    source: Source
    message: str = ""

    @property
    def spend_f(self) -> float:
        return float(self.spend)


class Details:
    """The facts behind partials, read once per source batch, only when a replay needs them."""

    def __init__(
        self,
        source: DetailSource | None = None,
        row_bases: dict[tuple[int, str], int] | None = None,
    ) -> None:
        """``row_bases``: per (partition, batch), the number its first row gets in positions
        (``FactColumns.row_base``; 0 when not given)."""
        self.source = source
        self.row_bases = row_bases or {}
        self._cols: dict[tuple[int, str], FactColumns] = {}
        self.fetched = 0  # batches read through the DetailSource (for tests and metrics)

    def add(self, src: Source, cols: FactColumns) -> None:
        self._cols[(src.partition, src.batch)] = cols

    def columns(self, src: Source) -> FactColumns:
        key = (src.partition, src.batch)
        cols = self._cols.get(key)
        if cols is None:
            if self.source is None:
                raise LookupError(f"no facts for batch {src.batch!r} of partition {src.partition}")
            self.fetched += 1
            batch, rows = split_ref(src.batch)
            table = self.source.facts_of(batch)
            if rows is not None:  # a slice of the batch (stream.rounds)
                if not 0 <= rows[0] <= rows[1] <= table.num_rows:
                    # The slice's reference: the batch's other slices may be sound.
                    raise FactsUnreadable(
                        src.batch, f"it has {table.num_rows} rows, not rows {rows[0]}:{rows[1]}"
                    )
                table = table.slice(rows[0], rows[1] - rows[0])
            cols = self._cols[key] = FactColumns(
                table, src.wm_start, src.partition, self.row_bases.get(key, 0)
            )
        return cols

    def rows(self, partials: Iterable[Partial], select: SelectRows) -> list[Row]:
        """The rows ``select`` picks from each source of ``partials``, in position order,
        with their costs (read in one go per source)."""
        out: list[Row] = []
        for cols in self.sources(partials):
            rows = select(cols)
            out.extend(
                (pos, cols, r, c)
                for pos, r, c in zip(
                    cols.positions(rows), rows.tolist(), cols.costs(rows), strict=True
                )
            )
        out.sort(key=lambda row: row[0])
        return out

    def sources(self, partials: Iterable[Partial]) -> list[FactColumns]:
        """The facts of each distinct source batch of ``partials``."""
        seen: dict[tuple[int, str], FactColumns] = {}
        for p in partials:
            key = (p.source.partition, p.source.batch)
            if key not in seen:
                seen[key] = self.columns(p.source)
        return list(seen.values())


# A row of a replay: (position, its batch, row number, its cost or None when unpriced).
Row = tuple[Pos, FactColumns, int, Decimal | None]


class SelectRows(Protocol):
    def __call__(self, cols: FactColumns) -> npt.NDArray[np.int64]: ...


def spans(cols: FactColumns, groups: Groups) -> tuple[list[Pos], list[Pos], list[int]]:
    """Per group: the position of its first and of its last row, and its earliest event time."""
    heads = groups.rows[groups.starts]
    tails = groups.rows[groups.ends - 1]
    return (
        cols.positions(heads),
        cols.positions(tails),
        groups.minimum(cols.ts_us[groups.rows]).tolist(),
    )


def by_group(partials: Iterable[Partial]) -> dict[tuple[int, str], list[Partial]]:
    """Partials per (variant, scope), in the order they came."""
    out: dict[tuple[int, str], list[Partial]] = {}
    for p in partials:
        out.setdefault((p.variant, p.scope), []).append(p)
    return out


def by_window(partials: Iterable[Partial]) -> list[tuple[int, list[Partial]]]:
    """Partials per window start, oldest window first."""
    out: dict[int, list[Partial]] = {}
    for p in partials:
        out.setdefault(p.window_start, []).append(p)
    return sorted(out.items(), key=lambda kv: kv[0])


def window_sorted(partials: Sequence[Partial]) -> bool:
    """Whether every row of an earlier window comes before every row of a later one, so that
    windows can be merged one after the other in the order of their starts."""
    by_start: dict[int, tuple[Pos, Pos]] = {}
    for p in partials:
        lo, hi = by_start.get(p.window_start, (p.first, p.last))
        by_start[p.window_start] = (min(lo, p.first), max(hi, p.last))
    ordered = [by_start[s] for s in sorted(by_start)]
    return all(a[1] < b[0] for a, b in pairwise(ordered))


def partials_table(partials: Sequence[Partial]) -> pa.Table:
    cols: dict[str, list[object]] = {
        "detector": [p.detector for p in partials],
        "scope": [p.scope for p in partials],
        "variant": [p.variant for p in partials],
        "window_start": [p.window_start for p in partials],
        "window_end": [p.window_end for p in partials],
        "rows": [p.rows for p in partials],
        "spend_usd": [p.spend for p in partials],
        "input_tokens": [p.input_tokens for p in partials],
        "cache_read_tokens": [p.cache_read_tokens for p in partials],
        "low_share": [p.low_share for p in partials],
        "first_ts": [p.first_ts for p in partials],
        "first_wm": [p.first[0] for p in partials],
        "first_row": [p.first[2] for p in partials],
        "last_wm": [p.last[0] for p in partials],
        "last_row": [p.last[2] for p in partials],
        "replay": [p.replay for p in partials],
        "message": [p.message or None for p in partials],
        "partition": [p.source.partition for p in partials],
        "batch": [p.source.batch for p in partials],
        "wm_start": [p.source.wm_start for p in partials],
        "wm_end": [p.source.wm_end for p in partials],
    }
    arrays = {}
    for f in PARTIALS:
        if f.type == _TS:
            arrays[f.name] = pa.array(cols[f.name], type=pa.int64()).cast(_TS)
        else:
            arrays[f.name] = pa.array(cols[f.name], type=f.type)
    return pa.table(arrays, schema=PARTIALS)


def partials_from_table(table: pa.Table) -> list[Partial]:
    data = {
        f.name: (
            table.column(f.name).cast(pa.int64()) if f.type == _TS else table.column(f.name)
        ).to_pylist()
        for f in PARTIALS
    }
    out = []
    for i in range(table.num_rows):
        part = int(data["partition"][i])
        out.append(
            Partial(
                detector=data["detector"][i],
                scope=data["scope"][i],
                variant=int(data["variant"][i]),
                window_start=int(data["window_start"][i]),
                window_end=int(data["window_end"][i]),
                rows=int(data["rows"][i]),
                spend=data["spend_usd"][i],
                input_tokens=int(data["input_tokens"][i]),
                cache_read_tokens=int(data["cache_read_tokens"][i]),
                low_share=float(data["low_share"][i]),
                first_ts=int(data["first_ts"][i]),
                first=(int(data["first_wm"][i]), part, int(data["first_row"][i])),
                last=(int(data["last_wm"][i]), part, int(data["last_row"][i])),
                replay=bool(data["replay"][i]),
                source=Source(part, data["batch"][i], data["wm_start"][i], data["wm_end"][i]),
                message=data["message"][i] or "",
            )
        )
    return out
