"""A failed batch the spool has no room for: kept in memory (one batch, as a Meter with no
spool keeps it), retried before the spool, and dropped only if the Meter closes with it
unsent, counted and logged naming the setting to raise. Real local HTTP server, real spool
files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from spendstream.producers import Meter
from tests.producers.test_meter import IngestServer, _fields, _meter, _wait_for
from tests.producers.test_meter import server as server  # the fixture, found by pytest here
from tests.producers.test_meter_flush import _on_disk, _returned
from tests.producers.test_meter_spool_room import TS, _line_bytes


def _failed_with_the_spool_full(server: IngestServer, tmp_path: Path) -> Meter:
    """A Meter whose first batch (e0, e1) failed while the spool was full: record()'s
    overflow (e4, e5, e6, the queue holding e2 and e3) filled it during the send."""
    server.answering.clear()
    meter = _meter(
        server,
        tmp_path,
        batch_size=2,
        queue_size=2,
        spool_max_bytes=3 * _line_bytes(0),
        spool_flush_s=600,  # no spill of the hung send: it fails instead
        timeout_s=120,
    )
    for i in range(2):
        meter.record(**_fields(i, ts=TS))
    _wait_for(lambda: server.requests == 1, "the first batch in flight")
    for i in range(2, 7):
        meter.record(**_fields(i, ts=TS))
    m = meter.metrics
    assert (m.spooled, m.overflowed, m.queued, m.dropped) == (3, 3, 4, 0)
    assert _on_disk(tmp_path / "spool") == ["e000004", "e000005", "e000006"]
    server.status = 503
    server.answering.set()  # the send fails, and its retry finds no room
    _wait_for(lambda: meter.metrics.send_failures >= 1, "the failed send")
    return meter


def _accounted(meter: Meter) -> int:
    m = meter.metrics
    return m.sent + m.rejected + m.dropped + m.invalid + m.queued + m.spooled - m.replayed


def test_a_failed_batch_the_spool_cannot_hold_is_kept_in_memory_and_sent_once_not_dropped(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Its two events were counted and logged as dropped: a full spool lost a batch at
    # every failed retry, though the batch was already in memory.
    caplog.set_level(logging.WARNING, "spendstream.producers")
    meter = _failed_with_the_spool_full(server, tmp_path)
    try:
        m = meter.metrics
        assert (m.dropped, m.spooled, m.queued) == (0, 3, 4)  # e0, e1 held; e2, e3 queued
        assert _accounted(meter) == 7
        # flush() does not wait out the outage for events the spool has no room for.
        assert _returned(meter.flush) is False
        kept = [r.getMessage() for r in caplog.records if "kept in memory" in r.getMessage()]
        assert kept and kept[0].startswith("2 usage events of a failed send kept in memory")
        assert "raise Meter spool_max_bytes= (now " in kept[0]
        server.status = 200
        assert meter.flush(timeout_s=60)
        m = meter.metrics
    finally:
        meter.close()
    ids = server.event_ids()
    assert sorted(ids) == [f"e{i:06d}" for i in range(7)]  # each once
    assert ids[:2] == ["e000000", "e000001"]  # the held batch first: older than the spool
    assert (m.sent, m.dropped, m.queued) == (7, 0, 0)
    assert m.spooled == m.replayed == 5  # e4, e5, e6, then e2, e3 once the spool had room
    assert not [r for r in caplog.records if "dropped so far" in r.getMessage()]


def test_closing_with_a_held_batch_and_the_spool_full_drops_it_counted_naming_the_setting(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The one real loss: the process ends with the endpoint down and no room on disk.
    meter = _failed_with_the_spool_full(server, tmp_path)
    meter.close(timeout_s=5)
    m = meter.metrics
    assert (m.dropped, m.spooled, m.queued, m.sent) == (4, 3, 0, 0)  # held 2, queued 2
    assert _accounted(meter) == 7
    assert _on_disk(tmp_path / "spool") == ["e000004", "e000005", "e000006"]
    drops = [r.getMessage() for r in caplog.records if "dropped so far" in r.getMessage()]
    assert drops and "raise Meter spool_max_bytes= (now " in drops[0]


def test_a_held_batch_stashed_at_close_is_counted_somewhere_throughout(
    server: IngestServer, tmp_path: Path
) -> None:
    # close() took the held batch out of memory before the spool had it (or the drop was
    # counted): meanwhile metrics counted 5 of 7 events, and a flush() from another thread
    # with nothing else pending found nothing queued, held or in flight: True.
    meter = _failed_with_the_spool_full(server, tmp_path)
    spool = meter._spool
    assert spool is not None
    append = spool.append
    seen: list[tuple[int, bool]] = []

    def watched(lines: list[bytes]) -> int:
        seen.append((_accounted(meter), meter._drained()))
        return append(lines)

    spool.append = watched  # type: ignore[method-assign]
    meter.close(timeout_s=5)
    assert seen and all(s == (7, False) for s in seen), seen
    assert _accounted(meter) == 7 and meter.metrics.dropped == 4


def test_a_held_batch_is_offered_to_the_spool_again_at_its_next_failure(
    server: IngestServer, tmp_path: Path
) -> None:
    # Held because the disk refused bytes (full before spool_max_bytes): once it takes
    # them again, the held batch goes on disk at its next failed retry rather than staying
    # in memory, lost to a kill, for the whole outage.
    server.status = 503
    meter = _meter(server, tmp_path, batch_size=2, timeout_s=30)
    spool = meter._spool
    assert spool is not None
    append = spool.append
    refusing = [True]

    def disk(lines: list[bytes]) -> int:
        if refusing[0]:
            spool.refusal = f"cannot write the spool in {spool.dir}: [Errno 28] No space left"
            return 0
        return append(lines)

    spool.append = disk  # type: ignore[method-assign]
    try:
        for i in range(2):
            meter.record(**_fields(i, ts=TS))
        _wait_for(lambda: len(meter._held) == 2, "the failed batch held")
        assert meter.metrics.spooled == 0
        refusing[0] = False  # the disk has room again
        _wait_for(lambda: meter.metrics.spooled == 2, "the held batch spooled", timeout_s=20)
        assert meter._held == [] and meter.metrics.queued == 0
        assert _on_disk(tmp_path / "spool") == ["e000000", "e000001"]
        server.status = 200
        assert meter.flush(timeout_s=60)
        m = meter.metrics
    finally:
        meter.close()
    assert sorted(server.event_ids()) == ["e000000", "e000001"]
    assert (m.sent, m.replayed, m.dropped) == (2, 2, 0)
