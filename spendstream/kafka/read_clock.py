"""``ReadClock``: the time up to which a consumer has read its partitions.

A consumer that is behind (it just started, took partitions over, or stalled) must not act
on the wall clock as if it had read everything sent before it: a deadline the wall clock
has passed may have its answer still unread. A ``ReadClock`` gives each record the time the
broker stamped it (at most the wall clock), and the consumer as a whole the oldest such
time over the partitions not read to their end. A partition read to its end reads at the
wall clock; one of which nothing has been read yet holds the caller's own clock.

It needs the partitions' ends: a ``Consumer`` made with ``partition_eof=True`` and read with
``consume(..., ends=True)``. Pure: no client and no clock of its own; partitions are the
adapter's ``(topic, partition)`` tuples.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from spendstream.kafka.consumer import Message, Partition

__all__ = ["ReadClock"]

_UNREAD = -1  # assigned, nothing read yet
_AT_END: None = None  # read to its end


class ReadClock:
    """Where a consumer stands in each partition it is assigned (module docstring)."""

    def __init__(self) -> None:
        # Partition -> _UNREAD, the broker time (ms) of the last record read while not at
        # its end, or _AT_END.
        self._progress: dict[Partition, int | None] = {}

    def assigned(self, partitions: Iterable[Partition]) -> None:
        self._progress.update(dict.fromkeys(partitions, _UNREAD))

    def revoked(self, partitions: Iterable[Partition]) -> None:
        for p in partitions:
            self._progress.pop(p, None)

    def rewound(self) -> None:
        """Every partition goes back to its committed offset: nothing read yet."""
        self._progress = dict.fromkeys(self._progress, _UNREAD)

    def read(
        self, events: Iterable[Message], wall: datetime, hold: datetime | None
    ) -> list[tuple[Message, datetime]]:
        """The records among ``events`` (partition ends taken out), each with the time it
        is read at: ``now`` as it stands once it has been read. ``hold``: the caller's
        clock, what a partition with nothing read yet holds (None: the wall clock)."""
        out: list[tuple[Message, datetime]] = []
        for m in events:
            p = (m.topic() or "", int(m.partition() or 0))
            if m.error() is not None:  # its end: nothing older unread there
                self._progress[p] = _AT_END
                continue
            kind, ms = m.timestamp()
            # No timestamp (kind 0): nothing to hold the clock back with.
            self._progress[p] = ms if kind and ms > 0 else _AT_END
            out.append((m, self.now(wall, hold)))
        return out

    def now(self, wall: datetime, hold: datetime | None) -> datetime:
        """The time up to which every assigned partition has been read."""
        oldest: int | None = None
        for ms in self._progress.values():
            if ms == _UNREAD:
                return hold or wall
            if ms is not None and (oldest is None or ms < oldest):
                oldest = ms
        if oldest is None:
            return wall
        return min(wall, datetime.fromtimestamp(oldest / 1000, UTC))
