"""ReadClock: the time up to which a consumer has read its partitions (pure; the records
are stand-ins with the read side of a client message)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from spendstream.kafka.read_clock import ReadClock

WALL = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
P0, P1 = ("requests", 0), ("requests", 1)


@dataclass
class Rec:
    """A record (``at``: seconds before WALL, as the broker stamped it) or a partition end."""

    part: tuple[str, int]
    at: float | None = None  # None: the partition's end
    kind: int = 2  # LogAppendTime

    def topic(self) -> str:
        return self.part[0]

    def partition(self) -> int:
        return self.part[1]

    def timestamp(self) -> tuple[int, int]:
        assert self.at is not None
        return self.kind, int((WALL - timedelta(seconds=self.at)).timestamp() * 1000)

    def error(self) -> object:
        return None if self.at is not None else "_PARTITION_EOF"


def ago(seconds: float) -> datetime:
    return WALL - timedelta(seconds=seconds)


def test_a_partition_read_to_its_end_reads_at_the_wall_clock() -> None:
    clock = ReadClock()
    clock.assigned([P0])
    timed = clock.read([Rec(P0, 0.5), Rec(P0)], WALL, None)
    assert [t for _, t in timed] == [ago(0.5)]  # the record at its own time...
    assert clock.now(WALL, None) == WALL  # ...then, at the end, the wall clock


def test_records_of_a_partition_behind_are_read_at_the_times_they_were_sent() -> None:
    clock = ReadClock()
    clock.assigned([P0])
    timed = clock.read([Rec(P0, 90), Rec(P0, 60), Rec(P0, 30)], WALL, None)
    assert [t for _, t in timed] == [ago(90), ago(60), ago(30)]
    assert clock.now(WALL, None) == ago(30)  # no end seen yet: maybe more behind it


def test_a_current_partition_waits_for_one_behind() -> None:
    """One server owns a partition it keeps up with and takes over one with a backlog: the
    current partition's records are read at the backlog's time until that reaches its end."""
    clock = ReadClock()
    clock.assigned([P0, P1])
    clock.read([Rec(P1, 0.1), Rec(P1)], WALL, None)
    timed = clock.read([Rec(P0, 80), Rec(P1, 0.05), Rec(P0, 70)], WALL, None)
    assert [t for _, t in timed] == [ago(80), ago(80), ago(70)]
    clock.read([Rec(P0)], WALL, None)
    assert clock.now(WALL, None) == ago(0.05)  # P1's newest record came after its end
    clock.read([Rec(P1)], WALL, None)
    assert clock.now(WALL, None) == WALL


def test_a_partition_with_nothing_read_yet_holds_the_callers_clock() -> None:
    clock = ReadClock()
    clock.assigned([P0])
    held = ago(600)
    assert clock.now(WALL, held) == held
    assert clock.now(WALL, None) == WALL  # a caller with no clock yet: nothing to hold
    clock.assigned([P1])
    assert [t for _, t in clock.read([Rec(P0), Rec(P1, 5)], WALL, held)] == [ago(5)]


def test_revoked_partitions_no_longer_count_and_a_rewind_reads_all_again() -> None:
    clock = ReadClock()
    clock.assigned([P0, P1])
    clock.read([Rec(P0, 40), Rec(P1)], WALL, None)
    assert clock.now(WALL, None) == ago(40)
    clock.revoked([P0])
    assert clock.now(WALL, None) == WALL
    clock.rewound()  # back to the committed offsets: nothing read
    assert clock.now(WALL, ago(7)) == ago(7)


def test_never_ahead_of_the_wall_clock_and_a_record_without_a_time_does_not_hold_it() -> None:
    clock = ReadClock()
    clock.assigned([P0, P1])
    clock.read([Rec(P1)], WALL, None)
    assert [t for _, t in clock.read([Rec(P0, -30)], WALL, None)] == [WALL]  # stamped ahead
    assert [t for _, t in clock.read([Rec(P0, 30, kind=0)], WALL, None)] == [WALL]
    assert clock.now(WALL, None) == WALL
