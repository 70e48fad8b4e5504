"""ReadClock: the time up to which a consumer has read each partition (pure; the records
are stand-ins with the read side of a client message)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from spendstream.kafka.read_clock import LOG_APPEND_TIME, ReadClock

WALL = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
P0, P1 = ("requests", 0), ("requests", 1)
CREATE_TIME = 1


@dataclass
class Rec:
    """A record at ``offset`` (``at``: seconds before WALL, as stamped) or, ``at`` None, the
    client's report that the partition ends at ``offset``."""

    part: tuple[str, int]
    at_offset: int
    at: float | None = None
    kind: int = LOG_APPEND_TIME

    def topic(self) -> str:
        return self.part[0]

    def partition(self) -> int:
        return self.part[1]

    def offset(self) -> int:
        return self.at_offset

    def timestamp(self) -> tuple[int, int]:
        assert self.at is not None
        return self.kind, int((WALL - timedelta(seconds=self.at)).timestamp() * 1000)

    def error(self) -> object:
        return None if self.at is not None else "_PARTITION_EOF"


def ago(seconds: float) -> datetime:
    return WALL - timedelta(seconds=seconds)


def read(clock: ReadClock, *events: Rec, hold: datetime | None = None) -> list[datetime]:
    return [t for _, t in clock.read(events, WALL, {P0: hold, P1: hold})]


def test_records_are_read_at_the_brokers_stamps_in_a_backlog() -> None:
    clock = ReadClock()
    clock.assigned([P0])
    assert read(clock, Rec(P0, 0, 90), Rec(P0, 1, 60), Rec(P0, 2, 30)) == [
        ago(90),
        ago(60),
        ago(30),
    ]
    assert clock.now(P0, WALL, None) == ago(30)  # maybe more behind it


def test_a_partition_confirmed_read_to_its_end_stands_at_the_time_asked() -> None:
    clock = ReadClock()
    clock.assigned([P0])
    read(clock, Rec(P0, 0, 5), Rec(P0, 1))  # the client says it ends at 1
    assert not clock.confirm(P0, ago(1), 2)  # the broker: it ends at 2, one more to read
    assert clock.now(P0, WALL, None) == ago(5)
    assert clock.confirm(P0, ago(1), 1)
    assert clock.now(P0, WALL, None) == ago(1)
    assert clock.confirm(P0, ago(3), 1)  # an older confirmation moves nothing back
    assert clock.now(P0, WALL, None) == ago(1)


def test_after_a_pause_the_client_reported_end_is_not_enough() -> None:
    """All read to the end, then the process is paused for a minute: until the broker
    confirms the end again, the partition stands where it was, not at the wall clock."""
    clock = ReadClock()
    clock.assigned([P0])
    read(clock, Rec(P0, 0, 70), Rec(P0, 1))
    clock.confirm(P0, ago(65), 1)
    assert clock.now(P0, WALL, None) == ago(65)
    assert not clock.confirm(P0, WALL, 3)  # two records appended during the pause
    assert read(clock, Rec(P0, 1, 40), Rec(P0, 2, 20)) == [ago(40), ago(20)]
    assert clock.confirm(P0, WALL, 3)
    assert clock.now(P0, WALL, None) == WALL


def test_under_steady_traffic_an_answer_confirms_once_the_reading_reaches_it() -> None:
    """Each time the broker is asked, a record more has been appended than the consumer has
    read: every answer waits for the reading, and the time moves on one answer behind."""
    clock = ReadClock()
    clock.assigned([P0])
    read(clock, Rec(P0, 0, 100, kind=CREATE_TIME))
    for tick in range(1, 30):
        assert not clock.confirm(P0, ago(100 - tick), tick + 1)  # one record not read yet
        read(clock, Rec(P0, tick, 100 - tick - 0.5, kind=CREATE_TIME))
        assert clock.now(P0, WALL, ago(900)) == ago(100 - tick)


def test_a_reading_far_behind_keeps_the_oldest_answers_and_still_moves() -> None:
    """More answers than are kept arrive while the reading is far behind: the oldest (the
    ends it reaches first) are kept, so the time moves as the backlog is read."""
    clock = ReadClock()
    clock.assigned([P0])
    read(clock, Rec(P0, 0, 300, kind=CREATE_TIME))
    for i in range(100):  # a tick's answer each, one record further each time
        clock.confirm(P0, ago(200 - i), i + 2)
    read(clock, Rec(P0, 1, 299, kind=CREATE_TIME))  # reaches the first answer's end
    read(clock, Rec(P0, 2, 298, kind=CREATE_TIME))
    assert clock.now(P0, WALL, ago(900)) == ago(199)
    for offset in range(3, 66):
        read(clock, Rec(P0, offset, 1, kind=CREATE_TIME))
    assert clock.now(P0, WALL, ago(900)) == ago(137)  # the 64th answer kept (end 65)
    for offset in range(66, 101):  # answers past the 64th were not kept
        read(clock, Rec(P0, offset, 1, kind=CREATE_TIME))
    assert clock.now(P0, WALL, ago(900)) == ago(137)
    assert clock.confirm(P0, ago(50), 101)  # asked again: kept, and already reached
    assert clock.now(P0, WALL, ago(900)) == ago(50)


def test_each_partition_has_its_own_time() -> None:
    clock = ReadClock()
    clock.assigned([P0, P1])
    read(clock, Rec(P1, 7, 0.1), Rec(P1, 8))
    clock.confirm(P1, WALL, 8)
    assert read(clock, Rec(P0, 0, 80), Rec(P1, 8, 0.05), Rec(P0, 1, 70)) == [
        ago(80),
        WALL,  # P1 was confirmed at its end at WALL: a later stamp cannot say less
        ago(70),
    ]
    assert (clock.now(P0, WALL, None), clock.now(P1, WALL, None)) == (ago(70), WALL)


def test_a_partition_with_nothing_known_holds_the_callers_clock() -> None:
    clock = ReadClock()
    clock.assigned([P0])
    assert clock.now(P0, WALL, ago(600)) == ago(600)
    assert clock.now(P0, WALL, None) == WALL  # a caller with no clock yet: nothing to hold
    read(clock, Rec(P0, 0))  # an empty partition: its end is reported at once...
    assert clock.now(P0, WALL, ago(600)) == ago(600)  # ...but only the broker confirms it
    assert clock.confirm(P0, ago(2), 0)
    assert clock.now(P0, WALL, ago(600)) == ago(2)


def test_a_client_send_time_is_not_trusted_and_nothing_is_ahead_of_the_wall_clock() -> None:
    clock = ReadClock()
    clock.assigned([P0])
    # CreateTime stamped by a client whose clock runs ten minutes ahead, in a backlog.
    assert read(clock, Rec(P0, 0, -600, kind=CREATE_TIME), hold=ago(900)) == [ago(900)]
    assert read(clock, Rec(P0, 1, 30, kind=0), hold=ago(900)) == [ago(900)]  # no stamp
    assert read(clock, Rec(P0, 2, -30)) == [WALL]  # a broker stamp ahead: capped


def test_records_of_a_partition_revoked_meanwhile_are_dropped_and_hold_nothing() -> None:
    clock = ReadClock()
    clock.assigned([P0, P1])
    clock.revoked([P0])
    assert read(clock, Rec(P0, 3, 40), Rec(P1, 0, 1)) == [ago(1)]
    assert clock.partitions == [P1]
    assert clock.now(P0, WALL, ago(50)) == WALL  # not ours: nothing of it waits here
    assert not clock.confirm(P0, WALL, 0)


def test_a_rewind_forgets_what_was_read() -> None:
    clock = ReadClock()
    clock.assigned([P0])
    read(clock, Rec(P0, 0, 5), Rec(P0, 1))
    clock.confirm(P0, ago(1), 1)
    clock.rewound()  # back to the committed offsets
    assert clock.now(P0, WALL, ago(7)) == ago(7)
    assert not clock.confirm(P0, WALL, 1)


@dataclass
class RawStamp(Rec):
    """A record whose broker stamp is ``ms`` as is (one no datetime may hold)."""

    ms: int = 0

    def timestamp(self) -> tuple[int, int]:
        return self.kind, self.ms


def test_a_stamp_no_datetime_holds_is_set_aside_and_the_reading_goes_on() -> None:
    """A stamp past year 9999 (or before 1970) cannot come from a sane broker, but must not
    stop the server: the record is read, at the time the partition stood at already, and
    confirmation still moves the partition on."""
    clock = ReadClock()
    clock.assigned([P0])
    assert read(clock, Rec(P0, 0, 30)) == [ago(30)]
    beyond = int(datetime(9999, 12, 31, tzinfo=UTC).timestamp() * 1000) + 86_400_000 * 2
    for offset, ms in enumerate((beyond, 2**63 - 1, -5), start=1):
        assert read(clock, RawStamp(P0, offset, at=0.0, ms=ms)) == [ago(30)]
    assert clock.now(P0, WALL, None) == ago(30)
    assert clock.confirm(P0, ago(2), 4)
    assert clock.now(P0, WALL, None) == ago(2)
