"""A spool slot holds one destination's events: replayed only to that destination, older slots
adopted, drained ones reused; log lines say which slot the events wait in."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from spendstream.producers import HttpTransport, KafkaTransport, Meter
from spendstream.producers import spool as spool_module
from spendstream.producers.spool import Spool, SpoolUnavailable
from tests.producers.test_meter import TOKEN, IngestServer, _fields


def _lines(n: int, start: int = 0) -> list[bytes]:
    return [b'{"event_id":"e%06d"}' % i for i in range(start, start + n)]


def _destination(slot: Path) -> str:
    return (slot / "destination").read_text()


def _spooled(root: Path, destination: str, lines: list[bytes]) -> Path:
    """A slot left by a closed process with ``lines`` unsent for ``destination``."""
    spool = Spool(root, destination=destination)
    assert spool.append(lines) == len(lines)
    spool.close()
    return spool.dir


# -- the Spool ------------------------------------------------------------------------------


def test_a_slot_holding_one_destination_s_events_is_left_to_that_destination(
    tmp_path: Path,
) -> None:
    slot_a = _spooled(tmp_path, "kafka://a:9092/usage", _lines(3))
    b = Spool(tmp_path, destination="kafka://b:9092/usage")
    assert b.dir != slot_a and b.empty  # A's slot is free, but not B's to replay
    b.append(_lines(2, start=100))
    b.close()
    # A's next process finds its events, and B's slot is skipped too.
    a2 = Spool(tmp_path, destination="kafka://a:9092/usage")
    b2 = Spool(tmp_path, destination="kafka://b:9092/usage")
    assert (a2.dir, a2.peek(10)) == (slot_a, _lines(3))
    assert (b2.dir, b2.peek(10)) == (b.dir, _lines(2, start=100))
    assert _destination(slot_a) == "kafka://a:9092/usage\n"
    assert _destination(b.dir) == "kafka://b:9092/usage\n"
    a2.close()
    b2.close()


def test_a_slot_without_a_destination_file_is_adopted_and_then_named(tmp_path: Path) -> None:
    old = _spooled(tmp_path, "unused", _lines(4))
    (old / "destination").unlink()  # as a version before destinations left it
    adopter = Spool(tmp_path, destination="https://ingest.example/v1/events")
    assert (adopter.dir, adopter.peek(10)) == (old, _lines(4))
    assert _destination(old) == "https://ingest.example/v1/events\n"
    adopter.close()
    # Adopted means owned: a third destination now leaves those events alone.
    other = Spool(tmp_path, destination="kafka://c:9092/usage")
    assert other.dir != old and other.empty
    other.close()


def test_a_drained_slot_of_another_destination_is_reused_and_renamed(tmp_path: Path) -> None:
    a = Spool(tmp_path, destination="kafka://a:9092/usage")
    a.append(_lines(5))
    a.commit(5)  # everything A spooled was sent
    a.close()
    b = Spool(tmp_path, destination="kafka://b:9092/usage")
    assert b.dir == a.dir and b.empty
    assert _destination(b.dir) == "kafka://b:9092/usage\n"
    b.append(_lines(1, start=50))
    b.close()
    # Now it holds B's event: A gets a new slot, not B's line.
    a2 = Spool(tmp_path, destination="kafka://a:9092/usage")
    assert a2.dir != a.dir and a2.empty
    a2.close()


def test_a_live_empty_slot_is_not_taken_by_another_destination(tmp_path: Path) -> None:
    a = Spool(tmp_path, destination="kafka://a:9092/usage")
    b = Spool(tmp_path, destination="kafka://b:9092/usage")
    assert b.dir != a.dir
    assert _destination(a.dir) == "kafka://a:9092/usage\n"
    a.close()
    b.close()


def test_spool_unavailable_counts_slots_held_for_other_destinations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "_MAX_SLOTS", 3)
    _spooled(tmp_path, "kafka://a:9092/usage", _lines(1))
    live = Spool(tmp_path, destination="kafka://c:9092/usage")
    _spooled(tmp_path, "kafka://b:9092/usage", _lines(1))
    with pytest.raises(SpoolUnavailable) as raised:
        Spool(tmp_path, destination="kafka://d:9092/usage")
    assert "1 held by live processes, 2 holding events for other destinations" in str(raised.value)
    live.close()


def test_a_destination_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one line"):
        Spool(tmp_path, destination="kafka://a:9092/usage\nkafka://b:9092/usage")


# -- transports' destinations ---------------------------------------------------------------


def test_destinations_are_canonical_and_tell_targets_apart() -> None:
    kafka = KafkaTransport("B:9092, a:9092", topic="usage")
    assert kafka.destination == "kafka://a:9092,b:9092/usage"
    assert KafkaTransport(["a:9092", "b:9092"], topic="usage").destination == kafka.destination
    assert KafkaTransport("a:9092,b:9092", topic="other").destination != kafka.destination
    http = HttpTransport("HTTP://Ingest.Example:80/", TOKEN)
    assert http.destination == "http://ingest.example/v1/events"
    assert HttpTransport("http://ingest.example:8787", TOKEN).destination == (
        "http://ingest.example:8787/v1/events"
    )
    for t in (kafka, http):
        t.close()


# -- the Meter ------------------------------------------------------------------------------


@pytest.fixture
def staging() -> Iterator[IngestServer]:
    s = IngestServer()
    yield s
    s.stop()


@pytest.fixture
def production() -> Iterator[IngestServer]:
    s = IngestServer()
    yield s
    s.stop()


def _meter(server: IngestServer, root: Path) -> Meter:
    return Meter.http(server.url, TOKEN, spool_dir=root, linger_s=0.01)


def test_events_spooled_for_one_endpoint_are_replayed_there_and_not_to_another(
    staging: IngestServer, production: IngestServer, tmp_path: Path
) -> None:
    staging.status = 503
    first = _meter(staging, tmp_path)
    for i in range(20):
        first.record(**_fields(i))
    first.close(timeout_s=0.3)
    assert first.metrics.spooled == 20
    with _meter(production, tmp_path) as prod:
        for i in range(100, 105):
            prod.record(**_fields(i))
        assert prod.flush(timeout_s=30)
        assert prod.metrics.replayed == 0
    assert production.event_ids() == [f"e{i:06d}" for i in range(100, 105)]
    staging.status = 200
    with _meter(staging, tmp_path) as again:
        assert again.flush(timeout_s=30)
        assert again.metrics.replayed == 20
    assert staging.event_ids() == [f"e{i:06d}" for i in range(20)]
    assert production.event_ids() == [f"e{i:06d}" for i in range(100, 105)]


def test_a_meter_says_which_slots_hold_events_for_other_destinations(
    staging: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The same server spelt otherwise (localhost for 127.0.0.1) is another destination: its
    # events waited in their slot, replayed by no Meter, and nothing said so.
    spelt_otherwise = staging.url.replace("127.0.0.1", "localhost")
    other = HttpTransport(spelt_otherwise, TOKEN).destination
    slot = _spooled(tmp_path, other, _lines(3))
    size = sum(len(line) + 1 for line in _lines(3))
    caplog.set_level(logging.WARNING, logger="spendstream.producers")
    with _meter(staging, tmp_path) as meter:
        assert meter.flush(timeout_s=30)
    said = [r.message for r in caplog.records if "holds events for other destinations" in r.message]
    assert said == [
        f"spendstream meter: the spool {tmp_path} also holds events for other destinations, "
        f"replayed only by a Meter sending there (a running one may be at it now): {slot.name} "
        f"{size} bytes for {other}. If one is this destination spelt otherwise, a Meter made "
        f"with that spelling replays it, or Meter.replay_slot('{slot}', transport) sends a slot "
        "through any transport"
    ]
    caplog.clear()
    with Meter.http(spelt_otherwise, TOKEN, spool_dir=tmp_path, linger_s=0.01) as there:
        assert there.flush(timeout_s=30)
    assert staging.event_ids() == ["e000000", "e000001", "e000002"]
    assert "other destinations" not in caplog.text  # replayed: nothing waits any more


def test_files_no_spool_wrote_in_another_slot_do_not_stop_a_meter(
    staging: IngestServer, tmp_path: Path
) -> None:
    # The look at other slots read every one: a stray seg-1.jsonl (no 12-digit number) or a
    # destination file that is not UTF-8 raised ValueError out of Spool(), and Meter().
    stray = tmp_path / "slot-3"
    stray.mkdir(parents=True)
    (stray / "seg-1.jsonl").write_text("x\n")
    (tmp_path / "slot-4").mkdir()
    (tmp_path / "slot-4" / "destination").write_bytes(b"\xff\xfe\n")
    with _meter(staging, tmp_path) as meter:
        meter.record(**_fields(1))
        assert meter.flush(timeout_s=30)
    assert staging.event_ids() == ["e000001"]


def test_the_spooled_events_log_line_names_the_slot(
    staging: IngestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    staging.status = 503
    caplog.set_level(logging.WARNING, logger="spendstream.producers")
    meter = _meter(staging, tmp_path)
    meter.record(**_fields(0))
    assert not meter.flush(timeout_s=0.5)
    meter.close(timeout_s=0.3)
    slot = tmp_path / "slot-0"
    assert _destination(slot) == HttpTransport(staging.url, TOKEN).destination + "\n"
    assert f"503: 1 event kept for retry in {slot}" in caplog.text


def test_an_unreachable_endpoint_s_log_line_counts_one_event_as_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # It said "1 events kept for retry".
    caplog.set_level(logging.WARNING, logger="spendstream.producers")
    meter = Meter.http("http://127.0.0.1:1", TOKEN, spool_dir=tmp_path, linger_s=0.01)
    meter.record(**_fields(0))
    assert not meter.flush(timeout_s=0.5)
    meter.close(timeout_s=0.3)
    assert f"): 1 event kept for retry in {tmp_path / 'slot-0'}" in caplog.text
    # And which endpoint: a service sending to several could not tell (the 4xx/5xx lines say).
    assert "ingest endpoint http://127.0.0.1:1/v1/events unreachable (" in caplog.text


def test_kafka_s_spooled_events_log_line_names_the_slot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport = KafkaTransport("127.0.0.1:1", max_block_ms=200)  # nothing listens there
    caplog.set_level(logging.WARNING, logger="spendstream.producers")
    meter = Meter(transport, spool_dir=tmp_path, linger_s=0.01)
    meter.record(**_fields(0))
    assert not meter.flush(timeout_s=1.0)
    meter.close(timeout_s=0.3)
    assert f"Kafka did not take 1 event, kept for retry in {tmp_path / 'slot-0'}:" in (caplog.text)


def test_a_forked_child_s_new_slot_names_the_parent_s_destination(
    staging: IngestServer, tmp_path: Path
) -> None:
    transport = HttpTransport(staging.url, TOKEN)
    meter = Meter(transport, spool_dir=tmp_path, linger_s=0.01)
    pid = os.fork()
    if pid == 0:  # the child: its own slot, for the same destination, named in its logs
        code = 1
        try:
            child_slot = tmp_path / "slot-1"
            named = _destination(child_slot) == transport.destination + "\n"
            logged = transport.kept_in == str(child_slot)
            code = 0 if named and logged else 1
            meter.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    meter.close()
