"""Writers of one process sharing one dedupe store (a Kafka worker's usage partitions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spendstream.errors import WriterFenced
from spendstream.warehouse import Warehouse
from spendstream.warehouse.landing import SharedDedupe
from tests.warehouse.factories import T0, days, fact


def _read_back(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Data files any writer reads back to catch its dedupe store up (recorded, then read)."""
    paths: list[str] = []
    real = Warehouse._add_files

    def add_files(self: Warehouse, files: list[str]) -> None:
        paths.extend(files)
        real(self, files)

    monkeypatch.setattr(Warehouse, "_add_files", add_files)
    return paths


def test_sharing_writers_see_each_other_without_reading_back_and_others_by_reading(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = SharedDedupe(30)
    a = Warehouse(workdir, writer="usage/0", dedupe=shared)
    b = Warehouse(workdir, writer="usage/1", dedupe=shared)
    other = Warehouse(workdir, writer="usage/2")  # another worker: a store of its own
    x, y, z, w = fact(), fact(), fact(), fact()
    a.commit(facts=[x, y])
    read = _read_back(monkeypatch)
    other.commit(facts=[z])
    landed_by_other = set(read)  # its catch-up read a's file: a different process
    read.clear()
    # b shares a's store: x is a duplicate with nothing read back; z was landed by another
    # process: read back once, then a duplicate too.
    result = b.commit(facts=[x, z, w])
    assert (result.facts, result.duplicates) == (1, 2)
    assert len(read) == 1 and read[0] not in landed_by_other
    read.clear()
    assert a.commit(facts=[w, y]).duplicates == 2  # b's and a's own keys: held, not read back
    assert read == []
    for wh in (a, b, other):
        wh.close()


def test_a_writer_reopened_on_a_shared_store_keeps_deduping_against_everything(
    workdir: Path,
) -> None:
    # A partition rewound after a failure opens a new writer on the same store.
    shared = SharedDedupe(30)
    a = Warehouse(workdir, writer="usage/0", dedupe=shared)
    x = fact()
    a.commit(facts=[x], positions={"usage/0": 7})
    a.close()
    again = Warehouse(workdir, writer="usage/0", dedupe=shared)
    assert again.resume().positions == {"usage/0": 7}
    assert again.commit(facts=[x]).duplicates == 1
    b = Warehouse(workdir, writer="usage/1", dedupe=shared)
    assert b.commit(facts=[x]).duplicates == 1
    again.close()
    b.close()


def test_a_partition_back_from_another_worker_dedupes_against_what_that_worker_landed(
    workdir: Path,
) -> None:
    # Worker A lands partition 0, loses it to worker B (a store of its own, the same writer
    # name), then gets it back: B's commits are "usage/0" too, and must still be read back.
    shared = SharedDedupe(30)
    a = Warehouse(workdir, writer="usage/0", dedupe=shared)
    x, y, z = fact(), fact(), fact()
    a.commit(facts=[x], positions={"usage/0": 1})
    a.close()
    b = Warehouse(workdir, writer="usage/0")
    b.commit(facts=[y], positions={"usage/0": 2})
    b.close()
    again = Warehouse(workdir, writer="usage/0", dedupe=shared)
    result = again.commit(facts=[x, y, z], positions={"usage/0": 3})
    assert (result.facts, result.duplicates) == (1, 2)
    again.close()


def test_a_fenced_writer_reopened_on_the_shared_store_lands_nothing_twice(
    workdir: Path,
) -> None:
    shared = SharedDedupe(30)
    a = Warehouse(workdir, writer="usage/0", dedupe=shared)
    sibling = Warehouse(workdir, writer="usage/1", dedupe=shared)
    x, y, z = fact(), fact(), fact()
    a.commit(facts=[x], positions={"usage/0": 1})
    elsewhere = Warehouse(workdir, writer="usage/0")  # another worker took the partition
    elsewhere.resume()
    elsewhere.commit(facts=[y], positions={"usage/0": 2})
    with pytest.raises(WriterFenced):
        a.commit(facts=[z], positions={"usage/0": 3})
    a.close()
    again = Warehouse(workdir, writer="usage/0", dedupe=shared)
    assert again.resume().positions == {"usage/0": 2}
    result = again.commit(facts=[x, y, z], positions={"usage/0": 3})
    assert (result.facts, result.duplicates) == (1, 2)  # z: refused when fenced, new now
    assert sibling.commit(facts=[x, y, z]).duplicates == 3
    for wh in (again, sibling, elsewhere):
        wh.close()


def test_an_old_event_resent_to_one_writer_is_found_in_the_table_another_writer_read_earlier(
    workdir: Path,
) -> None:
    # A Kafka worker's usage partitions: b opened last, so the store's slow path (an event
    # older than the window, looked up in its own day's partition) reads through b. b read
    # the facts table before a landed x; a then moved the window past x's day (a burst of
    # current traffic after a backfill), and x re-sent must still be a duplicate. It landed
    # a second time when the slow path listed b's stale copy of the table.
    from spendstream.config import WarehouseConfig

    config = WarehouseConfig(dedupe_window_days=2)
    shared = SharedDedupe(config.dedupe_window_days)
    a = Warehouse(workdir, writer="usage/0", config=config, dedupe=shared)
    b = Warehouse(workdir, writer="usage/1", config=config, dedupe=shared)
    b.commit(facts=[fact(T0)])
    x = fact(T0)
    a.commit(facts=[x])
    a.commit(facts=[fact(T0 + days(3))])
    assert a.commit(facts=[x]).duplicates == 1
    for wh in (a, b):
        wh.close()
