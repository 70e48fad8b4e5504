"""``retry_storm``'s memory of requests, as columns.

Most calls carry a request id of their own, so a batch reads and writes the state of about
as many requests as it has facts: as a dict of tuples that took ~0.5 us per fact under
Python's lock, plus a sorted copy of every live request for each state snapshot. Here a
batch finds its requests' slots with one dict lookup each and reads and writes their
states in a few numpy operations; the snapshot is the columns as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

__all__ = ["RequestState", "RequestTable"]

# (attempts seen, calls seen, epoch seconds (floored) of its newest call, fired)
RequestState = tuple[int, int, int, bool]


class RequestTable:
    """request id -> ``RequestState``: a slot per request and a column per field."""

    def __init__(self) -> None:
        self.slots: dict[str, int] = {}
        self.ids: list[str] = []
        self.attempts = np.zeros(0, dtype=np.int64)
        self.calls = np.zeros(0, dtype=np.int64)
        self.last = np.zeros(0, dtype=np.int64)
        self.fired = np.zeros(0, dtype=np.bool_)

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, ids: Sequence[str]) -> np.ndarray:
        """Each id's slot, -1 for a request not held."""
        return np.fromiter(map(self.slots.get, ids, repeat(-1)), dtype=np.int64, count=len(ids))

    def get(self, rid: str) -> RequestState | None:
        k = self.slots.get(rid)
        if k is None:
            return None
        return (int(self.attempts[k]), int(self.calls[k]), int(self.last[k]), bool(self.fired[k]))

    def write(
        self,
        ids: Sequence[str],
        slots: np.ndarray,
        attempts: np.ndarray,
        calls: np.ndarray,
        last: np.ndarray,
        fired: np.ndarray,
    ) -> None:
        """Set the states of distinct requests ``ids`` (``slots``: ``find``'s for them).
        New ones are appended: call it once per batch, not once per request."""
        held = slots >= 0
        k = slots[held]
        self.attempts[k], self.calls[k] = attempts[held], calls[held]
        self.last[k], self.fired[k] = last[held], fired[held]
        new = np.flatnonzero(~held)
        if not len(new):
            return
        start = len(self.ids)
        added = [ids[i] for i in new.tolist()]
        self.ids += added
        self.slots.update(zip(added, range(start, start + len(added)), strict=True))
        self.attempts = np.concatenate([self.attempts, attempts[new]])
        self.calls = np.concatenate([self.calls, calls[new]])
        self.last = np.concatenate([self.last, last[new]])
        self.fired = np.concatenate([self.fired, fired[new]])

    def keep_since(self, cutoff_s: int) -> None:
        """Forget requests whose newest call is before ``cutoff_s``."""
        keep = self.last >= cutoff_s
        if keep.all():
            return
        self.ids = [self.ids[i] for i in np.flatnonzero(keep).tolist()]
        self.slots = dict(zip(self.ids, range(len(self.ids)), strict=True))
        self.attempts, self.calls = self.attempts[keep], self.calls[keep]
        self.last, self.fired = self.last[keep], self.fired[keep]

    def wire(self) -> dict[str, list[Any]]:
        return {
            "ids": self.ids,
            "attempts": self.attempts.tolist(),
            "calls": self.calls.tolist(),
            "last": self.last.tolist(),
            "fired": self.fired.astype(np.int8).tolist(),
        }

    @classmethod
    def from_wire(cls, data: Any) -> RequestTable:
        """``wire()``'s form, or the earlier one: ``[[id, attempts, calls, last, fired]]``."""
        table = cls()
        if isinstance(data, dict):
            ids = [str(r) for r in data["ids"]]
            columns = [data["attempts"], data["calls"], data["last"], data["fired"]]
        else:
            ids = [str(row[0]) for row in data]
            columns = [[row[k] for row in data] for k in range(1, 5)]
        if len(set(ids)) != len(ids) or any(len(c) != len(ids) for c in columns):
            raise ValueError("retries state: request ids repeat, or columns differ in length")
        table.ids = ids
        table.slots = dict(zip(ids, range(len(ids)), strict=True))
        table.attempts, table.calls, table.last = (np.array(c, dtype=np.int64) for c in columns[:3])
        table.fired = np.array(columns[3], dtype=np.bool_)
        return table
