"""Event-time pacing of a worker's usage partitions (``held_back``): a partition whose keys
are sparse in event time must not race days ahead of a dense one, or the scope owners
hold everything it sends until the other catches up (their memory grew with a backlog).

The rule itself with its boundaries, then on a real broker through ``spendstream run``:
the order the worker landed its batches in, read back from the facts table's snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spendstream.kafka.admin import Admin, TopicSpec
from spendstream.kafka.producer import OutRecord, Producer
from spendstream.runtime.kafka.usage_loop import AHEAD_S, STALLED_S, Pace, held_back
from tests.runtime.kafka_workers import (
    Worker,
    key_calls,
    usage_batches,
    wait_all_judged,
    write_config,
)

US = 1_000_000
AHEAD_US = int(AHEAD_S * US)
BATCH = 100


NOW = 1000.0


def _pace(clock: int | None, backlog: bool = True, idle_s: float = 0.0) -> Pace:
    return Pace(clock, backlog, NOW - idle_s)


def test_the_least_advanced_partition_with_a_backlog_bounds_the_rest() -> None:
    parts = {0: _pace(100 * US), 1: _pace(500 * US), 2: _pace(160 * US)}
    assert held_back(parts, NOW) == {1}
    # Partition 0 caught up (less than a batch unread): it no longer holds the others back.
    parts[0] = _pace(100 * US, backlog=False)
    assert held_back(parts, NOW) == {1}
    parts[2] = _pace(160 * US, backlog=False)
    assert held_back(parts, NOW) == set()


@pytest.mark.parametrize(("ahead", "held"), [(AHEAD_US, False), (AHEAD_US + 1, True)])
def test_a_partition_waits_only_past_the_allowance(ahead: int, held: bool) -> None:
    got = held_back({0: _pace(7 * US), 1: _pace(7 * US + ahead)}, NOW)
    assert (1 in got) is held
    assert 0 not in got


def test_a_live_partition_is_never_held_behind_a_backfill() -> None:
    # Partition 1 is days ahead of partition 0's backfill but caught up: it goes on.
    parts = {0: _pace(US), 1: _pace(900_000 * US, backlog=False)}
    assert held_back(parts, NOW) == set()


def test_without_a_bounding_clock_nothing_waits() -> None:
    # A partition that has not landed a batch yet has no clock: it bounds no one, and one
    # with a backlog but no clock is never held.
    assert held_back({0: _pace(None), 1: _pace(900 * US)}, NOW) == set()
    assert held_back({0: _pace(None)}, NOW) == set()
    assert held_back({}, NOW) == set()


@pytest.mark.parametrize(("idle", "held"), [(STALLED_S - 0.001, True), (STALLED_S, False)])
def test_a_stalled_partition_holds_no_one_back(idle: float, held: bool) -> None:
    parts = {0: _pace(US, idle_s=idle), 1: _pace(900 * US)}
    assert (held_back(parts, NOW) == {1}) is held


def test_pacing_constants() -> None:
    # docs/kafka.md names both: a minute of event time ahead, 10 s without progress.
    assert AHEAD_S == 60.0
    assert STALLED_S == 10.0


@pytest.mark.kafka
@pytest.mark.slow
def test_a_sparse_partition_waits_for_a_dense_one(kafka_bootstrap: str, tmp_path: Path) -> None:
    config, prefix = write_config(
        tmp_path / "c.toml",
        kafka_bootstrap,
        partitions=2,
        batch_size=BATCH,
        backlog_batch_size=BATCH,  # batch by batch: what pacing orders
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
    for wave, facts in ((slice(0, 1), 2), (slice(1, None), 2002)):
        _produce(kafka_bootstrap, topic, sparse[wave], dense[wave])
        w = Worker(wd, config, tmp_path).start()  # a worker of its own per wave
        try:
            w.wait_ready(prefix)
            wait_all_judged(wd, kafka_bootstrap, prefix, facts, w)
        finally:
            assert w.stop() == 0, w.log_tail()

    landed = usage_batches(wd)
    assert sum(n for _, n, _, _ in landed) == 2002
    totals = {"usage/0": 1001, "usage/1": 1001}
    clock: dict[str, int] = {}
    count = dict.fromkeys(totals, 0)
    for writer, n, _lo, hi in landed:
        other = "usage/1" if writer == "usage/0" else "usage/0"
        mine = clock.get(writer)
        backlogs = all(totals[w] - count[w] >= BATCH for w in (writer, other))
        if mine is not None and other in clock and backlogs:
            # Both partitions had a backlog (a batch or more unread) and a clock: this batch
            # was drained only if its partition was at most AHEAD_S past the other.
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
