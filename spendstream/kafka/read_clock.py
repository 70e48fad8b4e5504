"""``ReadClock``: the time up to which a consumer has read each of its partitions.

A consumer that is behind (it just started, took a partition over, stalled or was paused)
must not act on the wall clock as if it had read everything sent before it: a deadline the
wall clock has passed may have its answer still unread. A ``ReadClock`` knows, per
partition, two times up to which everything appended has been read:

- the broker's stamp of the last record read (topics with
  ``message.timestamp.type=LogAppendTime``: the stamps follow the log's order). A client's
  own send time (CreateTime) is not trusted: a client whose clock runs ahead would make a
  backlog look read;
- the wall time at which the partition was last *confirmed* read to its end: the caller
  takes the time, then asks the broker for the partition's end (``confirm``); once the
  consumer has read up to that end, everything appended before that time has been read.
  An answer the reading has not reached yet waits for it, so under steady traffic the
  time still moves on, one answer behind. A partition's end as the client last reported
  it is not enough: after a pause the client has not yet fetched what was appended
  meanwhile.

A partition stands at the later of the two, never later than the wall clock; one with
neither yet holds the caller's own clock for it. Each record is read at the time its
partition stands at once it is read.

It needs the offsets of the partitions' ends as the client reports them: a ``Consumer`` made
with ``partition_eof=True`` and read with ``consume(..., ends=True)``. Pure: no client and
no clock of its own; partitions are the adapter's ``(topic, partition)`` tuples.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from spendstream.kafka.consumer import Message, Partition

__all__ = ["LOG_APPEND_TIME", "ReadClock"]

LOG_APPEND_TIME = 2  # confluent_kafka.TIMESTAMP_LOG_APPEND_TIME
# Answers waiting for the reading to reach their end; past this many, new ones are not
# kept: the oldest (lowest ends) are the ones the reading reaches next, and once they are
# taken, later answers are kept again.
_MAX_PENDING = 64


def _stamp(ms: int) -> datetime | None:
    """A broker's stamp as a time; None for one no datetime holds (before 1970, or past
    year 9999): the partition then stands where confirmation puts it, as on a topic
    stamped by clients."""
    if ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(slots=True)
class _Progress:
    next_offset: int | None = None  # after the last record read, or where its end was seen
    stamped: datetime | None = None  # the broker's stamp of the last record read
    confirmed: datetime | None = None  # last confirmed read to its end at this wall time
    # (asked at, end) answers not reached yet, oldest first
    pending: deque[tuple[datetime, int]] = field(default_factory=deque)

    def reached(self, at: datetime) -> None:
        if self.confirmed is None or at > self.confirmed:
            self.confirmed = at

    def advance(self, next_offset: int) -> None:
        self.next_offset = next_offset
        while self.pending and self.pending[0][1] <= next_offset:
            self.reached(self.pending.popleft()[0])

    def at(self) -> datetime | None:
        if self.stamped is None or self.confirmed is None:
            return self.stamped or self.confirmed
        return max(self.stamped, self.confirmed)


class ReadClock:
    """Where a consumer stands in each partition it is assigned (module docstring)."""

    def __init__(self) -> None:
        self._progress: dict[Partition, _Progress] = {}

    def assigned(self, partitions: Iterable[Partition]) -> None:
        for p in partitions:
            self._progress[p] = _Progress()

    def revoked(self, partitions: Iterable[Partition]) -> None:
        for p in partitions:
            self._progress.pop(p, None)

    def rewound(self) -> None:
        """Every partition goes back to its committed offset: nothing read yet."""
        self._progress = {p: _Progress() for p in self._progress}

    @property
    def partitions(self) -> list[Partition]:
        return list(self._progress)

    def read(
        self, events: Iterable[Message], wall: datetime, hold: dict[Partition, datetime | None]
    ) -> list[tuple[Message, datetime]]:
        """The records among ``events`` of partitions still assigned (ends and records of a
        partition revoked meanwhile taken out), each with the time it is read at; ``hold``:
        the caller's clock per partition (``now``)."""
        out: list[tuple[Message, datetime]] = []
        for m in events:
            p = (m.topic() or "", int(m.partition() or 0))
            progress = self._progress.get(p)
            if progress is None:
                continue  # revoked while the batch was fetched: its next owner reads it
            offset = int(m.offset() or 0)
            if m.error() is not None:  # its end, as the client last fetched it
                progress.advance(max(progress.next_offset or 0, offset))
                continue
            kind, ms = m.timestamp()
            stamped = _stamp(ms) if kind == LOG_APPEND_TIME else None
            if stamped is not None and (progress.stamped is None or stamped > progress.stamped):
                progress.stamped = stamped
            out.append((m, self.now(p, wall, hold.get(p))))
            # Past it: an answer whose end this record reaches confirms the next one's time.
            progress.advance(offset + 1)
        return out

    def confirm(self, partition: Partition, at: datetime, end: int) -> bool:
        """``end``: the partition's end offset as the broker answered when asked at wall
        time ``at`` or later. True, and the partition stands at ``at`` at least, if every
        record before ``end`` has been read; else the answer waits until they are."""
        progress = self._progress.get(partition)
        if progress is None:
            return False
        if progress.next_offset is None or progress.next_offset < end:
            if len(progress.pending) < _MAX_PENDING:
                progress.pending.append((at, end))
            return False
        progress.reached(at)
        return True

    def now(self, partition: Partition, wall: datetime, hold: datetime | None) -> datetime:
        """The time up to which ``partition`` has been read; ``hold``: the caller's clock
        for it, kept while nothing says more (None: the wall clock). A partition not
        assigned stands at the wall clock: nothing of it waits to be read here."""
        progress = self._progress.get(partition)
        if progress is None:
            return wall
        at = progress.at()
        if at is None:
            return hold or wall
        return min(at, wall)
