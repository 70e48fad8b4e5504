"""A hash set of 128-bit keys (with a 64-bit digest each) in numpy arrays, probed in batches.

Open addressing with linear probing over three parallel uint64 arrays (``hi`` 0 = empty),
kept at most half full. A batch of keys is probed or inserted with a handful of vectorised
rounds (one per probe distance still pending), so the cost per key is a few array passes,
independent of how many keys the set holds beyond the memory traffic of a bigger table.
Memory: 24 bytes per slot, 48-96 bytes per key.
"""

from __future__ import annotations

import numpy as np

from spendstream.sorting import stable_order, unique_first

__all__ = ["KeySet"]

_MIN_CAPACITY = 1 << 10


class KeySet:
    """Keys (hi, lo) with a digest each; ``hi`` must be non-zero (keyhash.hash128 ensures it)."""

    __slots__ = ("_dg", "_hi", "_lo", "_mask", "size")

    def __init__(self, capacity: int = _MIN_CAPACITY) -> None:
        cap = _MIN_CAPACITY
        while cap < capacity:
            cap <<= 1
        self._hi = np.zeros(cap, np.uint64)
        self._lo = np.zeros(cap, np.uint64)
        self._dg = np.zeros(cap, np.uint64)
        self._mask = np.uint64(cap - 1)
        self.size = 0

    @property
    def capacity(self) -> int:
        return len(self._hi)

    @property
    def nbytes(self) -> int:
        return self._hi.nbytes + self._lo.nbytes + self._dg.nbytes

    def find(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """The slot of each key, or -1 where absent."""
        out = np.full(len(hi), -1, np.int64)
        if not self.size or not len(hi):
            return out
        slot = (hi & self._mask).astype(np.int64)
        pending = np.arange(len(hi))
        mask = int(self._mask)
        while pending.size:
            s = slot[pending]
            held = self._hi[s]
            hit = (held == hi[pending]) & (self._lo[s] == lo[pending])
            out[pending[hit]] = s[hit]
            go_on = (held != 0) & ~hit
            pending = pending[go_on]
            slot[pending] = (slot[pending] + 1) & mask
        return out

    def digests_at(self, slots: np.ndarray) -> np.ndarray:
        return self._dg[slots]

    def insert(self, hi: np.ndarray, lo: np.ndarray, digest: np.ndarray) -> None:
        """Add keys known to be absent and distinct from each other."""
        if not len(hi):
            return
        if (self.size + len(hi)) * 2 > self.capacity:
            self._grow(self.size + len(hi))
        self._place(hi, lo, digest)
        self.size += len(hi)

    def _place(self, hi: np.ndarray, lo: np.ndarray, digest: np.ndarray) -> None:
        slot = (hi & self._mask).astype(np.int64)
        pending = np.arange(len(hi))
        mask = int(self._mask)
        while pending.size:
            s = slot[pending]
            free = self._hi[s] == 0
            # Several keys may want one free slot in the same round: the first takes it.
            cand = pending[free]
            taken, first, _ = unique_first(s[free])
            winners = cand[first]
            self._hi[taken] = hi[winners]
            self._lo[taken] = lo[winners]
            self._dg[taken] = digest[winners]
            placed = np.zeros(len(hi), bool)
            placed[winners] = True
            pending = pending[~placed[pending]]
            slot[pending] = (slot[pending] + 1) & mask

    def _grow(self, need: int) -> None:
        used = self._hi != 0
        hi, lo, dg = self._hi[used], self._lo[used], self._dg[used]
        cap = self.capacity
        while cap < need * 2:
            cap <<= 1
        self._hi = np.zeros(cap, np.uint64)
        self._lo = np.zeros(cap, np.uint64)
        self._dg = np.zeros(cap, np.uint64)
        self._mask = np.uint64(cap - 1)
        self._rehash(hi, lo, dg)

    def _rehash(self, hi: np.ndarray, lo: np.ndarray, digest: np.ndarray) -> None:
        """Place distinct keys into the empty table in one pass instead of ``_place``'s
        rounds (each a sort of the keys still pending: most of what growing cost).

        In home-slot order, linear probing puts each key at its home or right after the
        key before it, whichever is further: a running maximum. Keys that would run past
        the last slot wrap around to the first free ones, as probing does (``_place``).
        """
        home = (hi & self._mask).astype(np.int64)
        order = stable_order(home)
        rank = np.arange(len(order), dtype=np.int64)
        slot = np.maximum.accumulate(home[order] - rank) + rank
        inside = slot < self.capacity
        keep = order[inside]
        at = slot[inside]
        self._hi[at], self._lo[at], self._dg[at] = hi[keep], lo[keep], digest[keep]
        if not inside.all():
            rest = order[~inside]
            self._place(hi[rest], lo[rest], digest[rest])
