"""Dedupe by event_id whose cost per key does not grow with history.

``DedupeStore.classify(event_ids, days, digests)`` says, per event, ``NEW``, ``DUPLICATE``
(the id already landed, or came earlier in the batch, with the same content digest or no
digest to compare) or ``CONFLICT`` (same id, different digest). Keys are 128-bit hashes
(keyhash.py) in numpy hash sets (keyset.py), one set per UTC day of the event's ``ts``.

Exact over what window, and why:

* **In memory**: every landed key whose ``ts`` day is within ``window_days`` of the newest
  landed day (the *watermark*). The store is filled on open from the facts table (those
  days' partitions only), by this writer's commits, and by the files other writers commit
  (landing.py reads their event_ids before each classify and again when a commit races),
  so it is exact across writers and restarts for every event in the window.
* **Older events** (``ts`` before the window): the facts table is partitioned by the day of
  ``ts``, so every landed copy of an event with the same ``ts`` day is in that one
  partition; the store loads that day's ids from the table (``load_day``) and keeps a few
  such days cached. Exact too, at the price of reading one partition per old day touched.
* What is *not* caught: an id re-sent with a ``ts`` on another day *and* outside the window
  (that is a conflicting copy, not a replay). Within the window it is caught (all
  in-window days are probed).

Memory is ~48-96 bytes per key in the window; the cost per key is a few vectorised array
passes, the same at 10M landed keys as at none (bench/dedupe.py).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spendstream.sorting import stable_order, unique_first
from spendstream.warehouse.keyhash import hash128
from spendstream.warehouse.keyset import KeySet

__all__ = ["CONFLICT", "DUPLICATE", "NEW", "DedupeStore", "epoch_days"]

NEW = np.int8(0)
DUPLICATE = np.int8(1)
CONFLICT = np.int8(2)
_US_PER_DAY = 86_400_000_000
_OLD_DAYS_CACHED = 4
_VERSIONS = itertools.count(1)

# day -> (event_ids, digests or None) of the facts landed with ts on that day
DayLoader = Callable[[int], tuple[pa.Array, pa.Array | None]]


def epoch_days(ts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """UTC day numbers (days since 1970-01-01) of a timestamp[us] column."""
    us = pc.cast(ts, pa.int64())
    if isinstance(us, pa.ChunkedArray):
        us = us.combine_chunks()
    return np.floor_divide(us.to_numpy(zero_copy_only=False), _US_PER_DAY).astype(np.int64)


def _digest_hashes(digests: pa.Array | pa.ChunkedArray | None, n: int) -> np.ndarray:
    if digests is None:
        return np.zeros(n, np.uint64)
    if pa.types.is_fixed_size_binary(digests.type):
        digests = pc.cast(digests, pa.binary())  # stream/digest.py's 16-byte digests
    elif not (pa.types.is_string(digests.type) or pa.types.is_binary(digests.type)):
        digests = pc.cast(digests, pa.string())
    _, lo = hash128(digests)
    lo[lo == 0] = 1  # 0 means "no digest"
    if digests.null_count:  # facts landed without one: nothing to compare
        lo[pc.is_null(digests).to_numpy(zero_copy_only=False)] = 0
    return lo


class DedupeStore:
    """The landed keys of the window in memory, older days probed in the table on demand."""

    def __init__(self, window_days: int, load_day: DayLoader) -> None:
        self.window_days = window_days
        self.load_day = load_day
        self.days: dict[int, KeySet] = {}
        self.watermark: int | None = None  # newest landed ts day
        self._old: OrderedDict[int, KeySet] = OrderedDict()
        # A classification made at one version holds while it is unchanged: drawn anew at
        # each add, from one count for every store (a rebuilt store never repeats one).
        self.version = next(_VERSIONS)

    @property
    def keys(self) -> int:
        return sum(s.size for s in self.days.values())

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in (*self.days.values(), *self._old.values()))

    def window_start(self) -> int | None:
        return None if self.watermark is None else self.watermark - self.window_days

    # Classify.

    def classify(
        self,
        event_ids: pa.Array | pa.ChunkedArray,
        days: np.ndarray,
        digests: pa.Array | pa.ChunkedArray | None = None,
    ) -> np.ndarray:
        """NEW / DUPLICATE / CONFLICT per event (int8); nothing is inserted."""
        hi, lo = hash128(event_ids)
        dg = _digest_hashes(digests, len(hi))
        return self.classify_hashed(hi, lo, days, dg)

    def classify_hashed(
        self, hi: np.ndarray, lo: np.ndarray, days: np.ndarray, dg: np.ndarray
    ) -> np.ndarray:
        n = len(hi)
        out = np.full(n, NEW, np.int8)
        if not n:
            return out
        rows = np.arange(n)
        first = _first_occurrence(hi, lo)
        cand = np.flatnonzero(first == rows)
        stored = np.zeros(len(cand), np.uint64)
        found = np.zeros(len(cand), bool)
        for keyset in self.days.values():
            self._probe(keyset, hi, lo, cand, found, stored)
        start = self.window_start()
        if start is not None:
            old_days = np.unique(days[cand][~found & (days[cand] < start)])
            for day in old_days.tolist():
                keyset = self._old_day(int(day))
                self._probe(keyset, hi, lo, cand, found, stored, days, int(day))
        # Each row is judged against its id's landed copy when there is one, else against
        # the id's first row in the batch (so two rows conflicting with what landed are two
        # conflicts, and rows of an id landed without a digest are all replays).
        landed = np.zeros(n, bool)
        landed[cand[found]] = True
        reference = dg.copy()
        reference[cand[found]] = stored[found]
        judged = np.flatnonzero((first != rows) | landed[first])
        a, b = dg[judged], reference[first[judged]]
        out[judged] = np.where((a != 0) & (b != 0) & (a != b), CONFLICT, DUPLICATE)
        return out

    @staticmethod
    def _probe(
        keyset: KeySet,
        hi: np.ndarray,
        lo: np.ndarray,
        cand: np.ndarray,
        found: np.ndarray,
        stored: np.ndarray,
        days: np.ndarray | None = None,
        day: int | None = None,
    ) -> None:
        todo = ~found
        if days is not None:
            todo &= days[cand] == day
        idx = np.flatnonzero(todo)
        if not idx.size or not keyset.size:
            return
        slots = keyset.find(hi[cand[idx]], lo[cand[idx]])
        hit = slots >= 0
        found[idx[hit]] = True
        stored[idx[hit]] = keyset.digests_at(slots[hit])

    def _old_day(self, day: int) -> KeySet:
        keyset = self._old.get(day)
        if keyset is not None:
            self._old.move_to_end(day)
            return keyset
        ids, digests = self.load_day(day)
        hi, lo = hash128(ids)
        keyset = KeySet(len(hi) * 2)
        keep = _first_occurrence(hi, lo) == np.arange(len(hi))
        keyset.insert(hi[keep], lo[keep], _digest_hashes(digests, len(hi))[keep])
        self._old[day] = keyset
        while len(self._old) > _OLD_DAYS_CACHED:
            self._old.popitem(last=False)
        return keyset

    # Insert.

    def add(
        self,
        event_ids: pa.Array | pa.ChunkedArray,
        days: np.ndarray,
        digests: pa.Array | pa.ChunkedArray | None = None,
        *,
        known_new: bool = False,
    ) -> None:
        """Record landed keys. ``known_new``: they were just classified NEW (skip the probe)."""
        hi, lo = hash128(event_ids)
        self.add_hashed(hi, lo, days, _digest_hashes(digests, len(hi)), known_new=known_new)

    def add_hashed(
        self,
        hi: np.ndarray,
        lo: np.ndarray,
        days: np.ndarray,
        dg: np.ndarray,
        *,
        known_new: bool = False,
    ) -> None:
        if not len(hi):
            return
        self.version = next(_VERSIONS)
        top = int(days.max())
        if self.watermark is None or top > self.watermark:
            self.watermark = top
            start = self.watermark - self.window_days
            for day in [d for d in self.days if d < start]:
                del self.days[day]
        if not known_new:
            keep = _first_occurrence(hi, lo) == np.arange(len(hi))
            for keyset in (*self.days.values(), *self._old.values()):
                if keyset.size:
                    keep &= keyset.find(hi, lo) < 0
            hi, lo, days, dg = hi[keep], lo[keep], days[keep], dg[keep]
            if not len(hi):
                return
        start = self.watermark - self.window_days
        order = stable_order(days)
        uniq, bounds, _ = unique_first(days[order])
        for day, lo_i, hi_i in zip(
            uniq.tolist(), bounds.tolist(), [*bounds[1:].tolist(), len(order)], strict=True
        ):
            sel = order[lo_i:hi_i]
            targets = []
            if day >= start:
                targets.append(self.days.setdefault(day, KeySet(len(sel) * 2)))
            if day in self._old:
                targets.append(self._old[day])
            for keyset in targets:
                keyset.insert(hi[sel], lo[sel], dg[sel])


def _first_occurrence(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """For each key, the index of its first occurrence in the batch."""
    n = len(hi)
    idx = np.arange(n)
    if n < 2:
        return idx
    # The usual batch repeats no key: one sort of the high words tells (~0.06 ms for 20k,
    # against ~2 ms for the three-key sort below).
    high = np.sort(hi)
    if not (high[1:] == high[:-1]).any():
        return idx
    order = np.lexsort((idx, lo, hi))
    h, low = hi[order], lo[order]
    same = np.empty(n, bool)
    same[0] = False
    same[1:] = (h[1:] == h[:-1]) & (low[1:] == low[:-1])
    # Each run of equal keys starts at its smallest index (lexsort is by index last).
    run_start = np.maximum.accumulate(np.where(same, 0, np.arange(n)))
    first = np.empty(n, np.int64)
    first[order] = order[run_start]
    return first
