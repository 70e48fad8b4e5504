"""Which events of a batch are new, replays, or different events reusing a landed id.

The landed-key store keeps each landed event_id with its content digest
(stream/digest.py). ``classify`` judges a batch against it and against itself, in input
order: the first occurrence of an id nobody landed is new; a later one with the same
digest is a duplicate (a replay: counted, dropped); one with a different digest is a
conflict (the runtime makes it a ``conflicting_duplicate`` dead letter:
``stream.batch.conflict_dead_letters``). An id landed before digests were
kept has none to compare: its repeats count as duplicates.

The store behind it is one function, ``landed(ids) -> {id: digest or None}`` for the ids
already landed, so another store (an Iceberg-side one) plugs in without touching this.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = ["Classification", "Verdict", "classify"]


class Verdict(IntEnum):
    NEW = 0
    DUPLICATE = 1
    CONFLICT = 2


@dataclass(frozen=True, slots=True)
class Classification:
    """One verdict per row of the batch, in input order."""

    verdicts: np.ndarray  # int8 Verdict values

    @property
    def new(self) -> np.ndarray:
        return self.verdicts == Verdict.NEW

    @property
    def duplicate(self) -> np.ndarray:
        return self.verdicts == Verdict.DUPLICATE

    @property
    def conflict(self) -> np.ndarray:
        return self.verdicts == Verdict.CONFLICT


def classify(
    event_ids: Sequence[str],
    digests: Sequence[bytes],
    landed: Callable[[list[str]], dict[str, bytes | None]],
) -> Classification:
    """Judge each row against the landed store and the rows before it."""
    first: dict[str, int] = {}
    for row, event_id in enumerate(event_ids):
        first.setdefault(event_id, row)
    known = landed(list(first))
    verdicts = np.zeros(len(event_ids), dtype=np.int8)
    for row, event_id in enumerate(event_ids):
        if event_id in known:
            reference = known[event_id]
        else:
            origin = first[event_id]
            if origin == row:
                continue  # NEW
            reference = digests[origin]
        if reference is None or reference == digests[row]:
            verdicts[row] = Verdict.DUPLICATE
        else:
            verdicts[row] = Verdict.CONFLICT
    return Classification(verdicts)
