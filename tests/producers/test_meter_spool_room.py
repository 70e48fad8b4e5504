"""A spool with too little room while a send hangs or the queue moves to disk: events the
spool cannot take stay in memory (in flight or queued) and are neither lost nor counted as
dropped; only what cannot be kept when the Meter closes is. Real local HTTP server, real
spool files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from spendstream.producers import UsageEvent
from spendstream.producers import meter as meter_module
from spendstream.producers.spool import Spool
from tests.producers.test_meter import IngestServer, _fields, _meter, _wait_for
from tests.producers.test_meter import server as server  # the fixture, found by pytest here
from tests.producers.test_meter_flush import _on_disk, _returned

TS = "2026-01-01T00:00:00Z"


def _line_bytes(i: int) -> int:
    """The bytes event ``i`` (with the fixed ``TS``) takes in the spool, newline included."""
    return len(UsageEvent.model_validate(_fields(i, ts=TS)).model_dump_json(exclude_none=True)) + 1


def _drop_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]


def test_a_hung_batch_too_big_for_the_spool_stays_in_flight_and_is_sent_once_not_dropped(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The spill thread wrote 3 of the hung batch's 5 lines and counted and logged 2 dropped,
    # though the send still held all 5 and delivered them (and the 3 again from the spool).
    server.answering.clear()
    meter = _meter(
        server,
        tmp_path,
        batch_size=5,
        spool_max_bytes=3 * _line_bytes(0),
        spool_flush_s=0.4,
        timeout_s=120,
    )
    try:
        for i in range(5):
            meter.record(**_fields(i, ts=TS))
        _wait_for(lambda: server.requests == 1, "the batch in flight")
        # The transport hangs and the batch cannot be put on disk: flush() says so rather
        # than waiting for the endpoint (a guard against a hang, not a speed target).
        assert _returned(meter.flush) is False
        m = meter.metrics
        assert (m.spooled, m.dropped, m.queued, m.sent) == (0, 0, 5, 0)
        assert _on_disk(tmp_path / "spool") == []
        server.answering.set()  # the hung send succeeds
        assert meter.flush(timeout_s=60)
        m = meter.metrics
    finally:
        meter.close()
    assert server.event_ids() == [f"e{i:06d}" for i in range(5)]  # once each
    assert (m.sent, m.spooled, m.replayed, m.dropped, m.queued) == (5, 0, 0, 0, 0)
    assert _drop_logs(caplog) == []


def test_close_during_a_hung_send_spools_what_fits_of_a_batch_too_big_and_drops_the_rest(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The one real loss: the process ends with the send still hung, and the spool holds
    # only 3 of its 5 events. Counted and logged then, not before.
    server.answering.clear()
    meter = _meter(
        server,
        tmp_path,
        batch_size=5,
        spool_max_bytes=3 * _line_bytes(0),
        spool_flush_s=0.4,
        timeout_s=120,
    )
    for i in range(5):
        meter.record(**_fields(i, ts=TS))
    _wait_for(lambda: server.requests == 1, "the batch in flight")
    assert _returned(meter.flush) is False  # the spill thread found no room for it
    assert _drop_logs(caplog) == []
    meter.close(timeout_s=0.1)
    m = meter.metrics
    assert (m.spooled, m.dropped, m.queued) == (3, 2, 0)
    assert _on_disk(tmp_path / "spool") == [f"e{i:06d}" for i in range(3)]
    assert _drop_logs(caplog) and "2 usage events dropped" in _drop_logs(caplog)[0]


class _FilledMeanwhile(Spool):
    """A spool another writer fills while the queue is being moved to it: its first
    ``append`` first writes ``filler`` (as record()'s overflow or a failed batch's retry
    may, between the move's room check and its write), then the lines it was given."""

    filler: bytes = b""

    def append(self, lines: Sequence[bytes]) -> int:
        filler, type(self).filler = type(self).filler, b""
        if filler:
            assert super().append([filler]) == 1
        return super().append(lines)


def test_the_spool_filling_during_a_move_of_the_queue_leaves_the_rest_queued_not_dropped(
    server: IngestServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = _line_bytes(0)
    max_bytes = 20 * line
    # After the hung batch (1 line) and the filler, room for 2 of the 5 queued events.
    filler_bytes = max_bytes - line - 2 * line - 1
    pad = "x" * (filler_bytes - 1 - len(json.dumps({"event_id": "filler", "pad": ""})))
    filler = json.dumps({"event_id": "filler", "pad": pad}).encode()
    assert len(filler) + 1 == filler_bytes
    _FilledMeanwhile.filler = filler
    monkeypatch.setattr(meter_module, "Spool", _FilledMeanwhile)
    server.answering.clear()
    meter = _meter(
        server,
        tmp_path,
        batch_size=1,
        spool_max_bytes=max_bytes,
        spool_flush_s=4.0,  # 2 s before the spill: time to queue the other five
        timeout_s=120,
    )
    try:
        assert isinstance(meter._spool, _FilledMeanwhile)
        meter.record(**_fields(0, ts=TS))
        _wait_for(lambda: server.requests == 1, "the first event in flight")
        for i in range(1, 6):
            meter.record(**_fields(i, ts=TS))
        _wait_for(lambda: _FilledMeanwhile.filler == b"", "the queue moved to the spool")
        _wait_for(lambda: meter.metrics.spooled == 3, "the hung event and two queued ones")
        m = meter.metrics
        assert (m.spooled, m.dropped, m.queued) == (3, 0, 3)  # the 3 the spool refused
        server.answering.set()
        assert meter.flush(timeout_s=60)
        m = meter.metrics
    finally:
        meter.close()
    ids = [i for i in server.event_ids() if i != "filler"]
    assert sorted(ids) == [f"e{i:06d}" for i in range(6)]
    assert m.dropped == 0
    assert _drop_logs(caplog) == []
