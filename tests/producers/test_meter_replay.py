"""What ``record()`` pays while the Meter replays its spool: never a disk write of its own.

During a replay the sender sends spooled lines only, so the queue filled, and every event
after that was written to the spool by ``record()`` in the app's thread, waiting on the spool's
lock behind the replay's reads (13 ms at worst, measured at 2 000 records/s). Now the background
threads move the queue to the spool's tail as it fills; ``record()``'s own write is the last
resort of an app that outruns the disk by half a queue.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from spendstream.producers import HttpTransport, Meter, UsageEvent
from spendstream.producers import meter as meter_module
from spendstream.producers.spool import Spool
from tests.producers.test_meter import TOKEN, IngestServer, _fields, _wait_for

TS = "2026-01-01T00:00:00Z"


@pytest.fixture
def server() -> Iterator[IngestServer]:
    s = IngestServer()
    yield s
    s.stop()


def _line(i: int) -> bytes:
    return UsageEvent.model_validate(_fields(i, ts=TS)).model_dump_json(exclude_none=True).encode()


def _spooled_for(transport: HttpTransport, root: Path, ids: Sequence[int]) -> None:
    """A slot left by an earlier process with these events unsent for ``transport``."""
    spool = Spool(root, destination=transport.destination)
    assert spool.append([_line(i) for i in ids]) == len(ids)
    spool.close()


@pytest.fixture
def spool_writers(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The thread of every ``Spool.append`` from now on (the real method runs)."""
    writers: list[threading.Thread] = []
    append = Spool.append

    def noted(self: Spool, lines: Sequence[bytes]) -> int:
        writers.append(threading.current_thread())
        return append(self, lines)

    monkeypatch.setattr(Spool, "append", noted)
    return writers


def test_during_a_replay_the_queue_goes_to_the_spool_from_the_background_never_from_record(
    server: IngestServer, tmp_path: Path, spool_writers: list[threading.Thread]
) -> None:
    root = tmp_path / "spool"
    transport = HttpTransport(server.url, TOKEN)
    old = list(range(1000, 1200))
    _spooled_for(transport, root, old)
    spool_writers.clear()
    server.delay_s = 0.05  # one replayed line a request: the replay outlasts the recording
    meter = Meter(transport, spool_dir=root, queue_size=10, batch_size=1, linger_s=0.01)
    new = list(range(30))  # three times what the queue holds
    try:
        for start in range(0, len(new), 5):
            for i in new[start : start + 5]:  # half the queue: no overflow, whoever drains it
                meter.record(**_fields(i, ts=TS))
            seen = meter.metrics.replayed
            # The sender moves the queue to the spool before its next replayed batch (the
            # spill thread may be first): by the third batch from now, whatever the speed.
            _wait_for(
                lambda seen=seen: meter.metrics.queued == 0 or meter.metrics.replayed >= seen + 3,
                "the queue moved to disk, or three more batches replayed",
            )
            m = meter.metrics
            assert m.queued == 0, f"the queue waited behind the replay: {m}"
            assert m.spool_bytes > 0  # still replaying
        m = meter.metrics
        assert m.overflowed == 0, m
        assert spool_writers and threading.current_thread() not in spool_writers
        server.delay_s = 0.0
        assert meter.flush(timeout_s=60)
        m = meter.metrics
    finally:
        meter.close()
    # Every event once, in order: the old spool, then what was recorded during its replay.
    assert server.event_ids() == [f"e{i:06d}" for i in old + new]
    assert (m.sent, m.dropped, m.replayed) == (230, 0, 230)


def test_a_replay_send_that_hangs_leaves_the_queue_to_the_spill_thread_not_to_record(
    server: IngestServer, tmp_path: Path, spool_writers: list[threading.Thread]
) -> None:
    # The sender is inside a replayed batch's send that does not return (well short of
    # spool_flush_s / 2, when a send counts as stuck): record() wakes the spill thread once
    # the queue is half full, and that thread moves it to the spool.
    root = tmp_path / "spool"
    transport = HttpTransport(server.url, TOKEN, timeout_s=300)
    _spooled_for(transport, root, [1000])
    spool_writers.clear()
    server.answering.clear()
    meter = Meter(
        transport, spool_dir=root, queue_size=10, batch_size=1, linger_s=0.01, spool_flush_s=600
    )
    try:
        _wait_for(lambda: server.requests == 1, "the replayed line in flight")
        for start in range(0, 30, 5):
            for i in range(start, start + 5):
                meter.record(**_fields(i, ts=TS))
            _wait_for(lambda: meter.metrics.queued == 0, "the spill thread moving the queue")
        m = meter.metrics
        assert (m.overflowed, m.spooled, m.sent) == (0, 30, 0)
        assert spool_writers and threading.current_thread() not in spool_writers
        server.answering.set()
        assert meter.flush(timeout_s=60)
    finally:
        server.answering.set()
        meter.close()
    assert server.event_ids() == ["e001000"] + [f"e{i:06d}" for i in range(30)]


def test_a_full_spool_leaves_queued_events_in_memory_rather_than_dropping_them(
    server: IngestServer, tmp_path: Path
) -> None:
    # Moving the queue to a full spool dropped what did not fit, with the queue's room
    # unused: a queued event is dropped only when neither the queue nor the spool holds it.
    # (One-event batches: the failed batch itself is spooled, or dropped, as before.)
    server.status = 503
    room = 3 * (len(_line(0)) + 1)
    meter = _meter_for(server, tmp_path, spool_max_bytes=room, queue_size=10, batch_size=1)
    try:
        for i in range(6):
            meter.record(**_fields(i, ts=TS))
        _wait_for(lambda: meter.metrics.send_failures >= 1, "a failed send")
        _wait_for(lambda: meter.metrics.spooled == 3, "the spool filled")
        m = meter.metrics
        assert (m.spooled, m.queued, m.dropped) == (3, 3, 0)
        server.status = 200
        assert meter.flush(timeout_s=60)
    finally:
        meter.close()
    assert server.event_ids() == [f"e{i:06d}" for i in range(6)]


def _meter_for(server: IngestServer, tmp_path: Path, **kw: object) -> Meter:
    return Meter.http(server.url, TOKEN, spool_dir=tmp_path / "spool", linger_s=0.01, **kw)


class _OwnedLock:
    """The counters' lock, saying which thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: threading.Thread | None = None

    def __enter__(self) -> _OwnedLock:
        self._lock.acquire()
        self.owner = threading.current_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.owner = None
        self._lock.release()


def test_moving_the_queue_to_the_spool_serialises_it_outside_the_lock_record_can_take(
    server: IngestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # record() takes the counters' lock when it overflows or drops an invalid event, and
    # meter.metrics always does: the move serialised the whole half-queue under it (~10 ms
    # for 5 000 events), stalling those callers for as long.
    root = tmp_path / "spool"
    transport = HttpTransport(server.url, TOKEN)
    _spooled_for(transport, root, range(1000, 1050))
    server.delay_s = 0.05
    meter = Meter(transport, spool_dir=root, queue_size=40, batch_size=1, linger_s=0.01)
    lock = _OwnedLock()
    meter._c.lock = lock  # type: ignore[assignment]
    under_lock: list[str] = []
    value = meter_module._value

    def noted(event: UsageEvent) -> bytes:
        if lock.owner is threading.current_thread():
            under_lock.append(event.event_id)
        return value(event)

    monkeypatch.setattr(meter_module, "_value", noted)
    try:
        for i in range(30):
            meter.record(**_fields(i, ts=TS))
        _wait_for(lambda: meter.metrics.spooled >= 30, "the queue moved to the spool")
        server.delay_s = 0.0
        assert meter.flush(timeout_s=60)
    finally:
        meter.close()
    assert under_lock == []
    assert server.event_ids() == [f"e{i:06d}" for i in [*range(1000, 1050), *range(30)]]
