"""Idempotence by key for the small tables: an alert, a breaker event or a dead letter that
already landed is not landed again.

Alerts are keyed by ``alert_id``; breaker events by (scope, state, reason, ts) — a manual
reset lands the same ``closed`` event from ``spendstream breakers reset`` and from the
engine that hears of it; dead letters by (source, raw) — re-reading an input adds nothing,
even after an upgrade words its reason differently (the first reason stays). These tables are small (bad input, alerts), so all their keys are held: loaded from
the table on first use, then kept up to date with what other writers commit (their new files
are read before each use) and with this writer's own commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.warehouse import snapshots as sn
from spendstream.warehouse.keyhash import hash128
from spendstream.warehouse.keyset import KeySet

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from spendstream.warehouse.landing import Warehouse

__all__ = ["KEY_COLUMNS", "RowKeys"]

KEY_COLUMNS = {
    "alerts": ("alert_id",),
    "breaker_events": ("scope", "state", "reason", "ts"),
    "dead_letters": ("source", "raw"),
}


def _hash(t: pa.Table, columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    if not len(t):
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    cols = [pc.fill_null(t[c].cast(pa.string()), "") for c in columns]
    joined = cols[0] if len(cols) == 1 else pc.binary_join_element_wise(*cols, "\x1f")
    return hash128(joined)


def _first(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    from spendstream.warehouse.dedupe import _first_occurrence

    return _first_occurrence(hi, lo) == np.arange(len(hi))


class RowKeys:
    """The landed keys of one small table, as one writer sees them."""

    def __init__(self, wh: Warehouse, name: str) -> None:
        self.wh = wh
        self.name = name
        self.columns = KEY_COLUMNS[name]
        self.keys = KeySet()
        self._seen: int | None = None
        self._ready = False

    def _add(self, hi: np.ndarray, lo: np.ndarray) -> None:
        keep = _first(hi, lo)
        if self.keys.size:
            keep &= self.keys.find(hi, lo) < 0
        self.keys.insert(hi[keep], lo[keep], np.zeros(int(keep.sum()), np.uint64))

    def _read(self, paths: list[str]) -> None:
        if paths:
            self._add(
                *_hash(sn.read_columns(self.wh.storage, paths, list(self.columns)), self.columns)
            )

    def catch_up(self, tbl: Table | None = None) -> None:
        """Add what other writers landed up to ``tbl``'s head (loaded now if not given)."""
        if tbl is None:
            tbl = self.wh.tables.load(self.name)
        head = tbl.current_snapshot()
        head_id = None if head is None else head.snapshot_id
        if self._ready and head_id == self._seen:
            return
        paths = sn.appended_by_others(tbl, self._seen, self.wh.writer) if self._ready else None
        if paths is None:
            self.keys = KeySet()
            self._read([f.file_path for f in self.wh.manifests.live_files(tbl)])
        else:
            self._read(paths)
        self._seen, self._ready = head_id, True

    def new_rows(
        self, rows: pa.Table, caught_up: bool = False
    ) -> tuple[pa.Table, tuple[np.ndarray, np.ndarray], int]:
        """(rows not landed yet, first occurrence only; their keys; how many were dropped)."""
        if not caught_up:
            self.catch_up()
        hi, lo = _hash(rows, self.columns)
        keep = _first(hi, lo)
        if self.keys.size:
            keep &= self.keys.find(hi, lo) < 0
        dropped = int((~keep).sum())
        if not dropped:
            return rows, (hi, lo), 0
        return rows.filter(pa.array(keep)), (hi[keep], lo[keep]), dropped

    def landed(self, keys: tuple[np.ndarray, np.ndarray]) -> None:
        self._add(*keys)
