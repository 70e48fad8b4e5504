"""Event-time pacing of a worker's usage partitions (``held_back``): a partition whose keys
are sparse in event time must not race days ahead of a dense one, or the scope owners
hold everything it sends until the other catches up (their memory grew with a backlog).

The rule itself with its boundaries, then on a real broker through ``spendstream run``:
the order the worker landed its batches in, read back from the facts table's snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.runtime.kafka.usage_loop import AHEAD_S, STALLED_S, held_back
from tests.runtime.kafka_workers import Worker, key_calls, wait_all_judged, write_config

US = 1_000_000
AHEAD_US = int(AHEAD_S * US)


def test_the_least_advanced_partition_with_records_bounds_the_rest() -> None:
    clocks = {0: 100 * US, 1: 500 * US, 2: 160 * US}
    assert held_back(clocks, bounding=[0, 1, 2], ahead_us=AHEAD_US) == {1}
    # Partition 0 has read everything: it no longer holds the others back.
    assert held_back(clocks, bounding=[1, 2], ahead_us=AHEAD_US) == {1}
    assert held_back(clocks, bounding=[1], ahead_us=AHEAD_US) == set()


@pytest.mark.parametrize(("ahead", "held"), [(AHEAD_US, False), (AHEAD_US + 1, True)])
def test_a_partition_waits_only_past_the_allowance(ahead: int, held: bool) -> None:
    got = held_back({0: 7 * US, 1: 7 * US + ahead}, bounding=[0, 1], ahead_us=AHEAD_US)
    assert (1 in got) is held
    assert 0 not in got


def test_without_a_bounding_clock_nothing_waits() -> None:
    # A partition that has not landed a batch yet has no clock: it bounds no one, and one
    # with records but no clock is never held.
    assert held_back({1: 900 * US}, bounding=[0, 1, 2], ahead_us=AHEAD_US) == set()
    assert held_back({}, bounding=[0], ahead_us=AHEAD_US) == set()
    assert held_back({0: US, 1: 900 * US}, bounding=[], ahead_us=AHEAD_US) == set()


def test_pacing_constants() -> None:
    # docs/kafka.md names both: a minute of event time ahead, 10 s without progress.
    assert AHEAD_S == 60.0
    assert STALLED_S == 10.0


@pytest.mark.kafka
@pytest.mark.slow
def test_a_sparse_partition_waits_for_a_dense_one(kafka_bootstrap: str, tmp_path: Path) -> None:
    config, prefix = write_config(
        tmp_path / "c.toml", kafka_bootstrap, partitions=2, batch_size=100
    )
    topic = prefix + "spendstream.usage"
    Admin(kafka_bootstrap).ensure_topics([TopicSpec(topic, 2)])
    start = datetime(2026, 3, 1, tzinfo=UTC)
    # Each partition first lands one call, so both have a clock when the backlog comes
    # (a partition without one bounds no one). Then, with the worker stopped, a backlog of
    # 1,000 calls each from the same start: partition 0's span ten days, partition 1's one
    # day. The client hands a backlog over partition by partition (all of 0's fetched
    # records, then 1's), so unpaced, partition 0 would land day 10 before partition 1
    # landed anything past its first call.
    sparse = key_calls("sparse", 1001, start, timedelta(days=10) / 1000)
    dense = key_calls("dense", 1001, start, timedelta(days=1) / 1000)
    wd = tmp_path / "wd"
    _produce(kafka_bootstrap, topic, sparse[:1], dense[:1])
    w = Worker(wd, config, tmp_path).start()
    try:
        w.wait_ready(prefix)
        wait_all_judged(wd, kafka_bootstrap, prefix, 2, w)
    finally:
        assert w.stop() == 0, w.log_tail()
    _produce(kafka_bootstrap, topic, sparse[1:], dense[1:])
    w = Worker(wd, config, tmp_path).start()
    try:
        w.wait_ready(prefix)
        wait_all_judged(wd, kafka_bootstrap, prefix, 2002, w)
    finally:
        assert w.stop() == 0, w.log_tail()

    landed = _usage_batches(wd)
    assert sum(n for _, n, _, _ in landed) == 2002
    totals = {"usage/0": 1001, "usage/1": 1001}
    clock: dict[str, int] = {}
    count = dict.fromkeys(totals, 0)
    for writer, n, _lo, hi in landed:
        other = "usage/1" if writer == "usage/0" else "usage/0"
        mine = clock.get(writer)
        if mine is not None and other in clock and count[other] < totals[other]:
            # The other partition had records to read and a clock: this batch was drained
            # only if its partition was at most AHEAD_S past it.
            assert mine - clock[other] <= AHEAD_US, (writer, mine, clock[other])
        clock[writer] = max(clock.get(writer, hi), hi)
        count[writer] += n
    assert count == totals


def _produce(bootstrap: str, topic: str, zero: list[bytes], one: list[bytes]) -> None:
    """Partition 0's records, then partition 1's, as one send."""
    producer = Producer(bootstrap, client_id="spendstream-tests")
    try:
        records = [OutRecord(topic, v, partition=0) for v in zero]
        records += [OutRecord(topic, v, partition=1) for v in one]
        producer.send(records, 60).raise_first()
    finally:
        producer.close(timeout_s=10)


def _usage_batches(workdir: Path) -> list[tuple[str, int, int, int]]:
    """(writer, facts, first ts, last ts in us) of every usage commit, in commit order."""
    from spendstream.warehouse import Warehouse
    from spendstream.warehouse import snapshots as sn

    out = []
    with Warehouse(workdir, writer="reader") as wh:
        table = wh.tables.load("usage_facts")
        for snap in reversed(list(sn.ancestors_until(table, None))):
            writer = sn.summary_of(snap).get(sn.WRITER, "")
            files = sn.added_files(table, snap)
            if not writer.startswith("usage/") or not files:
                continue
            ts = sn.read_columns(wh.storage, [f.file_path for f in files], ["ts"])["ts"]
            us = pc.cast(pc.cast(ts, pa.timestamp("us", "UTC")), pa.int64())
            out.append((writer, len(ts), pc.min(us).as_py(), pc.max(us).as_py()))
    return out
