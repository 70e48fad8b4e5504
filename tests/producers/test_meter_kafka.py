"""The Meter against real Kafka brokers: keys and values, and no loss through an outage.

The outage tests use a dedicated broker (``kafka_broker_factory``) that they stop and
restart. ``LocalKafka.start`` is called from the test's main thread: the broker is tied
to the thread that starts it (it dies with that thread).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.partitioner import murmur2, partition_for
from spendstream.producers import Meter
from spendstream.topics import USAGE, partition_key
from tests.kafka_fixtures import read_topic


def _fields(i: int) -> dict[str, Any]:
    return {
        "event_id": f"ev-{i:07d}",
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "input_tokens": 1000 + i % 97,
        "output_tokens": 50,
        "api_key_id": f"key-{i % 7}" if i % 3 else None,
        "session_id": f"s-{i % 11}",
    }


def java_partition(key: bytes, partitions: int) -> int:
    """``DefaultPartitioner``/``BuiltInPartitioner`` for a keyed record."""
    return partition_for(key, partitions)


def test_murmur2_matches_kafkas_published_vectors() -> None:
    # From Kafka's UtilsTest.testMurmur2.
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107


def _read_all(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every record of the topic, beginning to end offsets."""
    return [(m.key(), m.value()) for m in read_topic(bootstrap, topic)]


def _create_usage_topic(bootstrap: str, partitions: int = 3) -> None:
    Admin(bootstrap, timeout_s=60).ensure_topics([TopicSpec(USAGE, partitions, {}, 1)])


def test_events_reach_kafka_as_json_keyed_by_the_pipeline_key(
    kafka_bootstrap: str, topic_factory: Any, tmp_path: Path
) -> None:
    topic = topic_factory(3)
    with Meter.kafka(kafka_bootstrap, topic=topic, spool_dir=tmp_path) as meter:
        for i in range(500):
            meter.record(**_fields(i))
        assert meter.flush(timeout_s=60)
        assert meter.metrics.sent == 500
    messages = read_topic(kafka_bootstrap, topic)
    records = [(m.key(), m.value()) for m in messages]
    assert len(records) == 500
    for key, value in records:
        event = json.loads(value)
        assert key == partition_key(
            event.get("api_key_id"),
            event.get("session_id"),
            event.get("request_id"),
            event["event_id"],
        )
    # The partition the Java client (and kafka-python before) would pick: murmur2 of the key.
    assert all(m.partition() == java_partition(m.key(), 3) for m in messages)
    assert sorted(json.loads(v)["event_id"] for _, v in records) == [
        f"ev-{i:07d}" for i in range(500)
    ]


class _Recorder(threading.Thread):
    """Records events at a steady pace up to a target the test moves forward."""

    def __init__(self, meter: Meter, total: int) -> None:
        super().__init__(daemon=True)
        self.meter, self.total = meter, total
        self.done = 0
        self.target = 0
        self.cond = threading.Condition()

    def advance(self, target: int) -> None:
        with self.cond:
            self.target = min(target, self.total)
            self.cond.notify_all()

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + 120
        while self.done < count:
            assert time.monotonic() < deadline, f"recorder stuck at {self.done}"
            time.sleep(0.05)

    def run(self) -> None:
        while self.done < self.total:
            with self.cond:
                while self.done >= self.target:
                    self.cond.wait()
                stop = self.target
            while self.done < stop:
                self.meter.record(**_fields(self.done))
                self.done += 1
                if self.done % 200 == 0:
                    time.sleep(0.02)  # ~10k events/s: recording spans the stop and the restart


@pytest.mark.slow
def test_100k_events_through_a_broker_outage_arrive_exactly_once(
    kafka_broker_factory: Any, tmp_path: Path
) -> None:
    total = 100_000
    broker = kafka_broker_factory()
    _create_usage_topic(broker.bootstrap)
    meter = Meter.kafka(broker.bootstrap, spool_dir=tmp_path / "spool", batch_size=2000)
    recorder = _Recorder(meter, total)
    recorder.start()

    recorder.advance(30_000)
    recorder.wait_for(30_000)
    recorder.advance(60_000)
    broker.stop()  # recording goes on while the broker shuts down
    recorder.wait_for(60_000)
    recorder.advance(80_000)
    recorder.wait_for(80_000)  # all of these while the broker is down
    down = meter.metrics
    recorder.advance(total)
    broker.start()  # from this thread: the broker lives as long as the test's main thread
    recorder.join(timeout=120)
    assert meter.flush(timeout_s=180), f"not delivered: {meter.metrics}"
    m = meter.metrics
    meter.close()

    assert down.spooled > 0  # the outage was real: events went to the spool
    assert m.dropped == 0 and m.sent == total and m.replayed == m.spooled
    ids = Counter(json.loads(v)["event_id"] for _, v in _read_all(broker.bootstrap, USAGE))
    assert len(ids) == total  # every event arrived
    duplicates = {k: n for k, n in ids.items() if n > 1}
    assert duplicates == {}, f"{len(duplicates)} event ids arrived more than once"


@pytest.mark.slow
def test_events_spooled_by_a_process_are_delivered_once_by_the_next(
    kafka_broker_factory: Any, tmp_path: Path
) -> None:
    broker = kafka_broker_factory(start=False)  # not running while the first process records
    spool = tmp_path / "spool"
    code = (
        "from spendstream.producers import Meter\n"
        f"m = Meter.kafka({broker.bootstrap!r}, spool_dir={str(spool)!r})\n"
        "for i in range(5000):\n"
        "    m.record(event_id=f'p-{i:05d}', provider='openai', model='gpt-5-mini',\n"
        "             input_tokens=10, output_tokens=1)\n"
        "m.close(timeout_s=1)\n"
        "print(m.metrics.spooled, m.metrics.dropped)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["5000", "0"], done.stdout + done.stderr

    broker.start()
    _create_usage_topic(broker.bootstrap, partitions=1)
    with Meter.kafka(broker.bootstrap, spool_dir=spool) as meter:
        assert meter.flush(timeout_s=120)
        assert meter.metrics.replayed == 5000
    values = [json.loads(v)["event_id"] for _, v in _read_all(broker.bootstrap, USAGE)]
    # One partition: the topic's order is the replay order, which must be the recorded order.
    assert values == [f"p-{i:05d}" for i in range(5000)]


_RECORDER = """
import os, sys, time
from spendstream.producers import Meter

bootstrap, spool, flush_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
meter = Meter.kafka(bootstrap, spool_dir=spool, spool_flush_s=flush_s)
i = 0
while True:
    meter.record(event_id=f"k-{i:07d}", provider="openai", model="gpt-5-mini",
                 input_tokens=10, output_tokens=1, api_key_id=f"key-{i % 5}")
    # Written after record() returned: the event counts as accepted from this instant.
    os.write(1, f"{i} {time.monotonic()}\\n".encode())
    i += 1
    time.sleep(0.002)
"""


@pytest.mark.slow
def test_kill_9_during_an_outage_loses_at_most_the_last_spool_flush_window(
    kafka_broker_factory: Any, tmp_path: Path, record_property: Any
) -> None:
    """Record against a broker that goes away, SIGKILL the producer, replay its spool to the
    broker once it is back: only events accepted in the last window may be missing."""
    import os
    import signal

    flush_s, linger_s = 0.5, 0.05  # the Meter's spool_flush_s (set here) and default linger_s
    window_s = flush_s + linger_s
    broker = kafka_broker_factory()
    _create_usage_topic(broker.bootstrap)
    spool = tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, "-c", _RECORDER, broker.bootstrap, str(spool), str(flush_s)],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        lines = 0
        while lines < 500:  # recording against a live broker first
            lines += child.stdout.readline().count(b"\n")
        broker.stop()  # the outage: the producer's sends now hang in its own retries
        time.sleep(4 * window_s)  # several windows of recording with no broker
        killed_at = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        out = child.stdout.read()
    finally:
        child.kill()
        child.wait(30)
    recorded = {}
    for line in out.splitlines():
        i, at = line.split()
        recorded[f"k-{int(i):07d}"] = float(at)
    recorded.update({f"k-{i:07d}": 0.0 for i in range(lines) if f"k-{i:07d}" not in recorded})

    broker.start()
    with Meter.kafka(broker.bootstrap, spool_dir=spool) as replayer:
        assert replayer.flush(timeout_s=180), replayer.metrics
        replayed = replayer.metrics.replayed
    arrived = {json.loads(v)["event_id"] for _, v in _read_all(broker.bootstrap, USAGE)}
    lost = {e: at for e, at in recorded.items() if e not in arrived}
    in_last_window = [e for e, at in recorded.items() if at >= killed_at - window_s]
    record_property("recorded", len(recorded))
    record_property("lost", len(lost))
    record_property("recorded_in_last_window", len(in_last_window))
    print(f"recorded {len(recorded)}, lost {len(lost)}, in the last window {len(in_last_window)}")
    assert replayed > 0  # the outage was real: what the killed process held came from disk
    assert len(lost) <= len(in_last_window), (len(lost), len(in_last_window))
    # Every lost event was accepted in the last window before the kill (0.2 s scheduling slack).
    assert all(at >= killed_at - window_s - 0.2 for at in lost.values()), sorted(lost.values())[:5]
