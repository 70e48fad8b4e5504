"""``Meter.replay_slot``: the events waiting in another destination's spool slot (the same
server spelt otherwise), sent through a transport of the user's choosing, with the slot's lock
held so no Meter replays them at the same time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from spendstream.producers import HttpTransport, Meter, UsageEvent
from spendstream.producers.meter import SlotReplay
from spendstream.producers.spool import Spool, SpoolUnavailable
from tests.producers.test_meter import TOKEN, IngestServer, _fields

TS = "2026-01-01T00:00:00Z"


@pytest.fixture
def server() -> Iterator[IngestServer]:
    s = IngestServer()
    yield s
    s.stop()


def _line(i: int) -> bytes:
    return UsageEvent.model_validate(_fields(i, ts=TS)).model_dump_json(exclude_none=True).encode()


def _stranded(root: Path, url: str, ids: range) -> Path:
    """A slot left by a process that sent to ``url``, with these events unsent."""
    spool = Spool(root, destination=HttpTransport(url, TOKEN).destination)
    assert spool.append([_line(i) for i in ids]) == len(ids)
    spool.close()
    return spool.dir


def _ids(ids: range) -> list[str]:
    return [f"e{i:06d}" for i in ids]


def test_a_slot_stranded_under_another_spelling_is_sent_by_replay_slot_once_in_order(
    server: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # localhost for 127.0.0.1: a Meter with the other spelling never replays the slot, and
    # the warning named no way to send it but making such a Meter.
    spelt_otherwise = server.url.replace("127.0.0.1", "localhost")
    slot = _stranded(tmp_path, spelt_otherwise, range(25))
    caplog.set_level(logging.WARNING, logger="spendstream.producers")
    with Meter.http(server.url, TOKEN, spool_dir=tmp_path, linger_s=0.01) as meter:
        assert meter.flush(timeout_s=30)
    assert f"Meter.replay_slot('{slot}', transport)" in caplog.text
    assert server.event_ids() == []

    transport = HttpTransport(server.url, TOKEN)
    try:
        done = Meter.replay_slot(slot, transport, batch_size=10)
    finally:
        transport.close()
    destination = HttpTransport(spelt_otherwise, TOKEN).destination
    assert done == SlotReplay(slot, destination, sent=25, rejected=0, left_bytes=0)
    assert server.event_ids() == _ids(range(25))
    assert len(server.bodies) == 3  # batches of 10, 10 and 5
    caplog.clear()
    with Meter.http(spelt_otherwise, TOKEN, spool_dir=tmp_path, linger_s=0.01) as there:
        assert there.flush(timeout_s=30)
    assert server.event_ids() == _ids(range(25))  # nothing left there to send twice
    assert "other destinations" not in caplog.text


def test_replay_slot_stops_at_a_failed_batch_and_the_next_run_sends_the_rest(
    server: IngestServer, tmp_path: Path
) -> None:
    slot = _stranded(tmp_path, "http://elsewhere:8787", range(20))
    transport = HttpTransport(server.url, TOKEN)
    try:
        server.status = 503
        failed = Meter.replay_slot(slot, transport, batch_size=10)
        assert (failed.sent, failed.rejected) == (0, 0)
        assert failed.left_bytes == sum(len(_line(i)) + 1 for i in range(20))
        server.status = 200
        server.reject_event_ids = {"e000003"}
        done = Meter.replay_slot(slot, transport, batch_size=10)
    finally:
        transport.close()
    assert (done.sent, done.rejected, done.left_bytes) == (19, 1, 0)
    assert server.event_ids() == _ids(range(20))


def test_replay_slot_holds_the_slot_s_lock_and_refuses_a_slot_a_process_holds(
    server: IngestServer, tmp_path: Path
) -> None:
    elsewhere = "http://elsewhere:8787"
    slot = _stranded(tmp_path, elsewhere, range(5))
    holder = Spool(tmp_path, destination=HttpTransport(elsewhere, TOKEN).destination)
    assert holder.dir == slot  # a running Meter of that destination, replaying it
    transport = HttpTransport(server.url, TOKEN)
    try:
        with pytest.raises(SpoolUnavailable, match="held by a running process"):
            Meter.replay_slot(slot, transport)
        holder.close()
        assert server.event_ids() == []

        # While replay_slot sends, a Meter of that destination starting now gets another
        # slot: the same events are not replayed by two processes at once.
        server.answering.clear()
        replay = threading.Thread(target=Meter.replay_slot, args=(slot, transport))
        replay.start()
        try:
            while server.requests == 0 and replay.is_alive():
                replay.join(0.01)
            assert server.requests == 1  # the slot's batch is in flight
            during = Spool(tmp_path, destination=HttpTransport(elsewhere, TOKEN).destination)
            assert during.dir != slot and during.empty
            during.close()
        finally:
            server.answering.set()
            replay.join()
    finally:
        transport.close()
    assert server.event_ids() == _ids(range(5))


def test_replay_slot_refuses_a_directory_that_is_not_a_slot(tmp_path: Path) -> None:
    (tmp_path / "slot-0").mkdir()
    transport = HttpTransport("http://127.0.0.1:9", TOKEN)
    try:
        with pytest.raises(SpoolUnavailable, match="not a spool slot"):
            Meter.replay_slot(tmp_path / "slot-0", transport)
        with pytest.raises(SpoolUnavailable, match="not a spool slot"):
            Meter.replay_slot(tmp_path, transport)
    finally:
        transport.close()
    assert not (tmp_path / "slot-0" / "lock").exists()
